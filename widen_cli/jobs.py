"""A job: one run to train, as plain picklable data. Planned once, passed down, never re-planned.

`widen train` makes one job; `sweep-width` makes one per member and seed from a single composed
config; pool and submitit workers receive the job itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from widen_cli.budget import Member, plan_member
from widen_cli.config import RunConfig
from widen_cli.data import spec_from_config


@dataclass(frozen=True)
class Job:
    run: RunConfig  # validated; its width, base_width, seed and method are this member's
    member: Member  # the planned member: shapes, kept weights, bottleneck sizes

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir


def make_job(run: RunConfig) -> Job:
    """Plan `run`'s member (an impossible one is a UserError before any data is read or folder made)."""
    return Job(run, plan_member(run.model, spec_from_config(run.dataset), run.base_width, run.width, run.method))
