"""What produced a run: software versions, the code's git commit, the machine, the command, the times and
the data's size. Stored in its summary's provenance columns (results.PROVENANCE_FIELDS) and in the
`provenance:` block of its config.yaml; never part of its identity, so it changes no run folder name and
no finished run is retrained for it.
"""
from __future__ import annotations

import functools
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

GIT_TIMEOUT = 5  # seconds: a slow or hanging git leaves the commit unknown instead of stalling a run


def now() -> datetime:
    return datetime.now(timezone.utc)


@functools.lru_cache(maxsize=None)
def environment() -> dict:
    """What is the same for every run this process trains."""
    import torch

    import widen_cli

    commit, dirty = git_state(Path(widen_cli.__file__).resolve().parent.parent)
    return dict(widen_version=widen_version(), git_commit=commit, git_dirty=dirty,
                python_version=platform.python_version(), torch_version=str(torch.__version__),
                cuda_version=torch.version.cuda, hostname=socket.gethostname(), command=shlex.join(sys.argv))


def widen_version() -> str:
    """The installed distribution's version; a source checkout never installed reports widen_cli.__version__."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("widen_cli")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import widen_cli

        return widen_cli.__version__


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, whether tracked files differ from it) when `root` is a git checkout's top folder (an
    installed package is not: (None, None)); (None, None) too when git is missing or too slow."""
    if not (root / ".git").exists():  # a folder in a checkout, or a file in a worktree
        return None, None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def _git(root: Path, *args: str) -> str:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock a user's git may hold
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL,
                          env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()


def device(used) -> dict:
    """The device trained on, `auto` resolved (a torch.device), and the GPU's name."""
    import torch

    if used.type == "cuda":
        index = used.index if used.index is not None else torch.cuda.current_device()
        return dict(device_used=f"cuda:{index}", device_name=torch.cuda.get_device_name(index))
    return dict(device_used=str(used), device_name=None)


def samples(train, test, val=None) -> dict:
    """The size of each split from its loader (num_samples); null for a split without a loader."""
    def count(loader):
        return None if loader is None else int(loader.num_samples)

    return dict(train_samples=count(train), val_samples=count(val), test_samples=count(test))


def started(config: Path) -> datetime | None:
    """When an unfinished run first started, from its config.yaml's `provenance:`; None if not recorded."""
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
        return datetime.fromisoformat(data["provenance"]["started_at"])
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        return None


def to_yaml(record: dict) -> dict:
    """The record as plain YAML values (times as ISO 8601 text)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}
