"""The methods: each way to fill a fixed weight budget at a wider width is one object following the
protocol of methods/protocol.py (`Method`), registered here by name. Code outside this package asks the
method (`method_of(run).epochs(run)`) instead of comparing names.

Adding a method: one module here, one conf/method/<name>.yaml, one line in REGISTRY
(docs/adding-a-method.md).
"""
from __future__ import annotations

from widen_cli.errors import UserError
from widen_cli.methods.bottleneck import LINEAR, NONLINEAR
from widen_cli.methods.dense import DENSE
from widen_cli.methods.protocol import MaskUpdater, Method
from widen_cli.methods.pruned import PRUNED
from widen_cli.methods.sparse import SPARSE

REGISTRY: dict[str, Method] = {m.name: m for m in (DENSE, SPARSE, LINEAR, NONLINEAR, PRUNED)}


def register(method: Method) -> Method:
    """Add (or replace) a method under its name; returns it."""
    REGISTRY[method.name] = method
    return method


def method_of(x, strict: bool = True) -> Method:
    """The method of a name, a MethodConfig, a RunConfig, a planned Member or a Job. An unknown name is a
    UserError, or with strict=False a bare Method of that name (runs of a method no longer registered,
    read back by the report)."""
    while not isinstance(x, str):
        x = x.method if hasattr(x, "method") else x.name
    if x in REGISTRY:
        return REGISTRY[x]
    if strict:
        raise UserError(f"unknown method {x!r}; valid: {', '.join(REGISTRY)}")
    return Method(x)


def identity_fields(method: dict) -> dict:
    """A MethodConfig's fields (as a dict) that belong to its run's identity: every method's but the
    options other methods own (pruned's prune, scope, ...), so that folders named before those options
    existed keep their names."""
    own = set(method_of(method["name"], strict=False).own_options)
    others = {k for m in REGISTRY.values() for k in m.own_options} - own
    return {k: v for k, v in method.items() if k not in others}


def method_of_line(line: str) -> Method:
    """The method a report line's label starts with (its family label); a bare Method if none does."""
    names = [n for n in REGISTRY if line == n or line.startswith(n + " ")]
    return REGISTRY[max(names, key=len)] if names else Method(line.split(" ")[0])


def rows_where(names, fact):
    """A pandas Series of method names -> the boolean Series of rows whose method satisfies `fact`
    (Method -> bool, e.g. `lambda m: m.random_mask`): how tables of results ask methods per row."""
    return names.map(lambda n: bool(fact(method_of(n, strict=False)))).astype(bool)


__all__ = ["REGISTRY", "MaskUpdater", "Method", "identity_fields", "method_of", "method_of_line", "register",
           "rows_where"]
