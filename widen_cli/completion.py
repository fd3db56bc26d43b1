"""Tab completion of option values: names from the config groups (conf/ and the user's config folders).

Reads folder listings only (no Hydra, torch or pandas), so a tab press answers at once.
"""
from __future__ import annotations

from pathlib import Path

LAUNCHERS = ("local", "pool", "submitit")  # widen_cli.launch.LAUNCHERS' names; launch itself loads too much


def _dirs(ctx) -> list[Path]:
    from widen_cli.compose import config_dirs
    from widen_cli.errors import UserError

    try:  # --config-dir given earlier on the line, and WIDEN_CONFIG_PATH
        return config_dirs(tuple((ctx.params or {}).get("config_dir") or ()))
    except UserError:  # a folder that does not exist: the shipped names still complete
        return []  # (choices adds the shipped conf/ itself)


def _group(group: str):
    def complete(ctx, incomplete: str) -> list[str]:
        from widen_cli.compose import choices

        return [n for n in choices(group, _dirs(ctx)) if n.startswith(incomplete)]
    return complete


def _listed(group: str):
    """A comma-separated list (--methods sparse,linear-bottleneck): complete the part after the last comma."""
    def complete(ctx, incomplete: str) -> list[str]:
        from widen_cli.compose import choices

        done, _, last = incomplete.rpartition(",")
        head = f"{done}," if done else ""
        return [head + n for n in choices(group, _dirs(ctx)) if n.startswith(last)]
    return complete


def launchers(incomplete: str) -> list[str]:
    return [n for n in LAUNCHERS if n.startswith(incomplete)]


datasets, experiments, methods, models = (_group(g) for g in ("dataset", "experiment", "method", "model"))
method_lists = _listed("method")
