"""How a run uses the machine: CPU threads, cuDNN autotuning, memory format, bf16 autocast, compilation.

None of this changes what is trained. Only `precision` changes the numbers (it is part of a run's
identity); the rest is where and how fast it runs.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from widen_cli.errors import UserError
from widen_cli.validation import check_device

THREADS_ENV = ("WIDEN_THREADS", "OMP_NUM_THREADS")  # the first one set wins


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    check_device(name)
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def _cgroup_cpus() -> int | None:
    """The CPU quota of this container (cgroup v2 `cpu.max`), rounded up; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def cpu_threads(resumed: int | None = None) -> int:
    """Threads for CPU training: $WIDEN_THREADS or $OMP_NUM_THREADS when set; else, for a run resumed
    from a checkpoint, the count it started with (`resumed`); else the cores this process may use (its
    CPU affinity, capped by a container's CPU quota).

    The count is part of how a run computes: matrix products split their sums by thread, so on some
    CPUs (AMD EPYC) two counts differ in the last bits. Keeping a resumed run's count makes it end
    exactly as if it had never stopped, wherever the cores it lands on now differ."""
    for var in THREADS_ENV:
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"{var} must be a positive integer, got {value!r}")
            return int(value)
    return resumed or available_cpus()


def available_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    return min(cores, quota) if quota else cores


def _cgroup_memory() -> int | None:
    """This container's memory limit (cgroup v2 `memory.max`, else v1), None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:  # v1 writes a huge number for unlimited
            return int(text)
    return None


def _address_space_left() -> int | None:
    """What `ulimit -v` (RLIMIT_AS) leaves this process beyond what it has mapped already."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        mapped = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        mapped = 0
    return max(0, soft - mapped)


def available_memory(device: torch.device, here: bool = True) -> tuple[int, str]:
    """Bytes a run on `device` may use, and what sets the limit: a GPU's free memory (not `here`, as for a
    sweep whose members may run in other processes: its size, which asks no CUDA context of this one); on
    the CPU, the physical memory capped by a container's limit and by `ulimit -v` (the totals, not what
    is free now, so that the answer does not depend on what else runs)."""
    if device.type == "cuda":
        if not here:
            return torch.cuda.get_device_properties(device).total_memory, f"the size of {device}"
        free, _total = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    limits = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"),
              (_cgroup_memory(), "container limit"), (_address_space_left(), "ulimit -v")]
    return min((n, why) for n, why in limits if n is not None)


def setup(device: torch.device, resumed_threads: int | None = None) -> None:
    """Process-wide settings for training on `device` (`resumed_threads`: see cpu_threads)."""
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(resumed_threads))
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels


def is_conv_model(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last_pays(device: torch.device) -> bool:
    """cuDNN's tensor-core kernels and oneDNN's AVX-512 CPU kernels are faster in channels_last (ResNet-18
    width 16 trains ~1.3x faster on an AVX-512 Xeon). On AVX2-only CPUs (AMD EPYC here) oneDNN's backward
    of a strided 1x1 convolution (the ResNet downsample) in channels_last takes minutes for one step, so
    those CPUs keep the default layout."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and "AVX512" in torch.backends.cpu.get_cpu_capability()


def memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last for convolutional models where it pays (channels_last_pays); the layout changes no result."""
    return torch.channels_last if is_conv_model(model) and channels_last_pays(device) else torch.contiguous_format


class Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast; logits come back in fp32, so the loss is fp32."""

    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model, self.device_type = model, device_type

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()


def accelerate(model: nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False) -> nn.Module:
    """What the training loop calls forward on. `model` itself stays the plain module whose parameters
    the optimiser, the masks and any saved state refer to; the returned module shares them."""
    net = Autocast(model, device.type) if precision == "bf16" else model
    if compile:
        net = torch.compile(net)
    return net


class EagerSGD(torch.optim.SGD):
    """torch.optim.SGD, computing exactly the same, without the `torch._dynamo` import its methods do on
    first use (about 1.7 s: most of a short run's start). torch wraps step, zero_grad and the param-group
    and state-dict methods to keep its compiler out of them; nothing here compiles an optimizer step (only
    the model, with --compile), so the wrapped functions are called directly."""


for _name in ("step", "zero_grad", "add_param_group", "state_dict", "load_state_dict"):
    _fn = getattr(getattr(torch.optim.SGD, _name), "__wrapped__", None)
    if _fn is not None:  # a torch that no longer wraps a method keeps its own (correct, if slower to start)
        setattr(EagerSGD, _name, torch.no_grad()(_fn) if _name == "step" else _fn)  # step: as torch's wrapper
