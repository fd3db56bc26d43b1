"""Where the configs shipped with the package lie, however it was installed."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped_conf_dir() -> Path:
    """widen_cli/conf in an installed wheel (pyproject.toml maps the repository's conf/ there); the
    repository's conf/ beside the package in a checkout or an editable install, which read it in place."""
    for candidate in (PACKAGE / "conf", PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"widen_cli was installed without its configs: no config.yaml in {PACKAGE / 'conf'} "
                       f"or {PACKAGE.parent / 'conf'}; reinstall it (pip install .)")
