"""Multi-GPU training under `torchrun`: one process per device, DistributedDataParallel, rank 0 writes.

`torchrun --nproc_per_node=N -m widen_cli train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here is a no-op and the run is the ordinary single-process one. Every rank reads the
same global batches and trains on its slice of each (see data.Shard), so the global batch, the data
order and the masks (drawn on the CPU from the seed) are those of the single-process run.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from widen_cli.errors import UserError

if TYPE_CHECKING:
    import torch

# torch is imported where a function needs it: the CLI asks is_main_process() before torch is loaded.


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The torchrun environment of this process (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    return Context(int(os.environ.get("RANK", 0)), world, int(os.environ.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    return from_env().is_main


def device_for(ctx: Context, name: str) -> str:
    """Under torchrun each process takes its own GPU, cuda:LOCAL_RANK."""
    if not ctx.enabled or name == "cpu":
        return name
    import torch

    if name not in ("auto", "cuda"):
        raise UserError(f"under torchrun use --device cuda, auto or cpu (each process takes cuda:LOCAL_RANK), "
                        f"got {name!r}")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise UserError("device 'cuda' requested but CUDA is not available here; use --device cpu or auto")
        return "cpu"
    return f"cuda:{ctx.local_rank}"


def init(ctx: Context, device: torch.device, batch_size: int) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    import torch
    import torch.distributed as dist

    if not ctx.enabled or dist.is_initialized():
        return
    if batch_size < ctx.world:
        raise UserError(f"the batch ({batch_size}) must hold at least one sample per process ({ctx.world})")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def close(ctx: Context) -> None:
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """DDP averages the gradients of the ranks' slices: the single-process step on the global batch.
    On GPUs BatchNorm is synchronised too, so its statistics are over the global batch as well
    (SyncBatchNorm needs CUDA; on the CPU each rank normalises its own slice)."""
    if not ctx.enabled:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def sum_all(ctx: Context, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (epoch totals: loss sums, correct counts, sample counts)."""
    if not ctx.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def check_identical(ctx: Context, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Fail loudly if `tensors` differ between ranks (masks at the start, weights at the end)."""
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests = [None] * ctx.world
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"{what} differ between ranks: {digests}")
