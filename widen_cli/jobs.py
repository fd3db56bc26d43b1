"""A job: one run to train, as plain picklable data. Planned once, passed down, never re-planned.

`widen train` makes one job; `sweep-width` makes one per member and seed from a single composed
config; pool and submitit workers receive the job itself.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from widen_cli.budget import Member, plan_member
from widen_cli.schema import DENSE, OptimConfig, RunConfig
from widen_cli.datasets import spec_from_config
from widen_cli.identity import run_dir
from widen_cli.methods import method_of


@dataclass(frozen=True)
class Job:
    run: RunConfig  # validated; its width, base_width, seed and method are this member's
    member: Member  # the planned member: shapes, kept weights, bottleneck sizes
    keep_weights: tuple[int, ...] = ()  # dense runs: epochs whose weights to keep (magnitude-rewind targets)
    restart: bool = False  # --restart: its checkpoint is discarded and it starts from epoch 1 (lifecycle.start)
    parent: Job | None = None  # a pruned run's dense parent, planned with it (trained first, or read back)

    def __post_init__(self):
        if (self.parent is None) == method_of(self.run).has_parent:
            raise ValueError(f"{self.run_dir.name}: a parent's job goes with the methods that train from one "
                             f"(jobs.make_job attaches it)")

    @property
    def run_dir(self) -> Path:
        return run_dir(self.run)

    @property
    def epochs(self) -> int:
        """Epochs this run trains: the recipe's, or a pruned run's epochs after pruning."""
        return method_of(self.run).epochs(self.run)

    @property
    def optim(self) -> OptimConfig:
        """The recipe this run trains with; a pruned run's fine-tuning gets it compressed into its epochs
        (milestones scaled), so a fine-tune of the full length is the recipe itself."""
        optim = self.run.optim
        if self.epochs == optim.epochs:
            return optim
        scale = self.epochs / optim.epochs
        return replace(optim, epochs=self.epochs, milestones=tuple(max(1, round(m * scale)) for m in optim.milestones))


def make_job(run: RunConfig, member: Member | None = None, keep_weights: tuple[int, ...] = (),
             planned: dict[Path, Job] | None = None) -> Job:
    """`run`'s job, its member planned unless given (an impossible one is a UserError before any data is
    read or folder made). A method that trains from a dense parent gets the parent's job attached: the
    one in `planned` (a sweep's jobs by run folder) when there, else planned here keeping its weights at
    the epoch a magnitude-rewind run goes back to."""
    if member is None:
        member = plan_member(run.model, spec_from_config(run.dataset), run.base_width, run.width, run.method)
    parent = None
    if method_of(run).has_parent:
        parent = (planned or {}).get(run_dir(parent_run(run))) or \
            make_job(parent_run(run), keep_weights=method_of(run).parent_keep_epochs(run))
    return Job(run, member, keep_weights, parent=parent)


def parent_run(run: RunConfig) -> RunConfig:
    """A pruned run's parent: the dense run at its width (same data, recipe, seed and output folder), the
    very run a sweep's dense member at that width is."""
    return replace(run, method=DENSE, name=None)
