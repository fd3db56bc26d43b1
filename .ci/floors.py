"""Print a pip constraints file that pins every dependency in pyproject.toml (extras included) to its
lowest allowed version, e.g. `rich>=14.1` -> `rich==14.1`. `make test-lowest` installs with it, so the
floors we declare are the versions that are tested; a dependency without a `>=` floor is an error."""
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the copy pip carries
    from pip._vendor import tomli as tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + [r for extra in project.get("optional-dependencies", {}).values()
                                          for r in extra]
for requirement in requirements:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][A-Za-z0-9.]*)\s*(?:,.*)?", requirement.split(";")[0])
    if not m:
        sys.exit(f"error: {requirement!r} has no '>=' floor to test")
    print(f"{m[1]}=={m[2]}")  # a constraint names no extras
