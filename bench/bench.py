"""`make bench`: our training path against plain loops, side by side in one process, as ratios.

1. resnet  ResNet-18 width 16 (a sparse member of the base-width-8 family) on CIFAR-10-shaped data:
           ours (data decoded once, batch augmentation, fused masks) against a reference loop in the
           style of most research code (torchvision's CIFAR10 + PIL transforms + DataLoader, every
           layer's gradient masked in Python each step, .item() every step). Target >= 2x on CPU, 3x on GPU.
2. masks   the same model, sparse against dense, our path: the cost of the masks. Target <= 5% extra.
3. family  the Figure 7 MLP family (784-d input, base width 8, widths 8..635, one hidden layer, sparse):
           batched (widen_cli/stacked_training.py) against one member after another, training steps. Target >= 5x
           on CPU. For information also whole epochs, evaluation on 10,000 test images included.
4. memory  the peak memory of each variant, each run alone in a subprocess (the OS's peak resident
           set of the process, VmHWM; on CUDA also torch's peak allocated memory).
3c. sparse the same batched family's training steps on each path of widen_cli/sparse_ops.py: torch's
           private embedding_bag ops (used when present), public CSR products, public embedding_bag; as
           ratios to the private path, for information.
5. process the whole process (bench/process.py): `widen sweep-width` on the Figure 7 MLP family (7
           sparse widths, 30 epochs, batch 100, 5,000 MNIST-format images) against a plain PyTorch loop
           (bench/plain_loop.py) training the same models one at a time, both timed as subprocesses
           from start to exit. Target >= 3x. 6. the latency of `widen --help` and of a bad option: < 0.5 s.
7. regrow  SET and RigL mask updates (bench/mask_updates.py): one update's cost, epochs with updates
           against static sparse ones, and rebuilding the batched family's index after an update.
8. learned the `set` and `rigl` methods' epochs against `sparse`'s (bench/learned.py): each method's own
           masks and updater through train.train_epoch, as `widen train` runs them.

Timings: a warm-up, then `--rounds` rounds of a fixed number of steps per variant, the variants taking
turns; each variant's fastest round gives its steps/s (every round is printed). The CIFAR-10 files are
random images written in the real on-disk format (pickled batches) to a temporary folder. CPU threads:
as training uses them (WIDEN_THREADS to choose). Not part of the test suite.

    python bench/bench.py [--device cpu|cuda] [--rounds 5] [--only resnet,masks,family,sparse,process,regrow,learned]
    [--no-memory]
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's widen_cli, whatever is installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from widen_cli import hardware, sparse_ops, stacked_training  # noqa: E402
from widen_cli.budget import plan_member  # noqa: E402
from widen_cli.compose import load  # noqa: E402
from widen_cli.data import load_data  # noqa: E402
from widen_cli.datasets import spec_from_config  # noqa: E402
from widen_cli.models import build_model  # noqa: E402
from widen_cli.sparsity import draw_masks, sparsify  # noqa: E402
from widen_cli.train import evaluate, make_optimizer, train_epoch  # noqa: E402

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # what research code hard-codes
FIG7_WIDTHS = (8, 32, 128, 216, 328, 512, 635)
TARGETS = {"resnet": {"cpu": 2.0, "cuda": 3.0}, "masks": 0.05, "family": {"cpu": 5.0}}


# ---------------------------------------------------------------- data

def write_fake_cifar10(root: Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0) -> None:
    """Random images in CIFAR-10's on-disk layout: cifar-10-batches-py/data_batch_1..5, test_batch,
    batches.meta, each a pickled dict as in the official archive."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = n_train // 5
    parts = [(f"data_batch_{i}", per) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in parts:
        entry = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": per, "num_vis": 3072}, f, protocol=2)


def trust_checksums(root: Path) -> None:
    """torchvision checks the official archive's md5 sums: point them at the files written here."""
    from torchvision.datasets import CIFAR10

    base = root / "cifar-10-batches-py"

    def md5(name):
        return hashlib.md5((base / name).read_bytes()).hexdigest()

    CIFAR10.train_list = [[f, md5(f)] for f, _ in CIFAR10.train_list]
    CIFAR10.test_list = [[f, md5(f)] for f, _ in CIFAR10.test_list]
    CIFAR10.meta = {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])}


class Steps:
    """A loader cycled for exactly n batches (epochs restart as needed)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self):
        return self.n

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.n)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- variants: setup(), then run(n) steps

RESNET = ["dataset=cifar10", "model=resnet18", "width=16", "base_width=8", "seed=0"]


class OursResNet:
    """Our path, as `widen train` runs it: in-memory data, batch augmentation, fused masks."""

    def __init__(self, data: Path, device: str, method: str, precision: str = "fp32", compile: bool = False):
        _, self.run_cfg = load([*RESNET, f"dataset.root={data}", f"method={method}", f"device={device}",
                                f"precision={precision}", f"compile={str(compile).lower()}"])
        self.method = method

    def setup(self):
        run = self.run_cfg
        self.device = hardware.resolve_device(run.device)
        hardware.setup(self.device)
        torch.manual_seed(0)
        self.loader, _, spec = load_data(run.dataset, run.optim.batch_size, self.device, run.seed)
        member = plan_member(run.model, spec, run.base_width, run.width, run.method)
        model = build_model(run.model, run.width, spec).to(self.device)
        self.model = model.to(memory_format=hardware.memory_format(model, self.device))
        self.masks = sparsify(self.model, member, run.seed) if self.method == "sparse" else None
        self.opt, _ = make_optimizer(self.model, run.optim)
        self.net = hardware.accelerate(self.model, self.device, run.precision, run.compile)

    def run(self, n: int):
        totals = train_epoch(self.net, Steps(self.loader, n), self.opt, self.masks)
        totals.mean_loss  # one host sync, as at the end of an epoch


class ReferenceResNet:
    """The common research loop: torchvision dataset + PIL transforms + DataLoader, the batch moved to
    the device each step, every masked layer's gradient multiplied in Python, .item() each step."""

    def __init__(self, data: Path, device: str, workers: int = 2):
        self.data, self.device, self.workers = data, hardware.resolve_device(device), workers

    def setup(self):
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms

        from widen_cli.models.resnet import ResNet18

        hardware.setup(self.device)  # same thread count as ours: the comparison is of the loops
        tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
        dataset = datasets.CIFAR10(str(self.data), train=True, transform=tf)
        loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=self.workers, drop_last=True)
        self.batches = (batch for _ in itertools.count() for batch in loader)
        torch.manual_seed(0)
        self.model = ResNet18(16, 10).to(self.device)
        _, run = load([*RESNET, "method=sparse"])
        member = plan_member(run.model, spec_from_config(run.dataset), run.base_width, run.width, run.method)
        self.masks = {f"{name}.weight": m.to(self.device).float() for name, m in draw_masks(member, 0).items()}
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.masks:
                    p.mul_(self.masks[name])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.running_loss, self.correct = 0.0, 0

    def run(self, n: int):
        self.model.train()
        for _ in range(n):
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad()
            loss.backward()
            for name, p in self.model.named_parameters():
                if name in self.masks:
                    p.grad.mul_(self.masks[name])
            self.opt.step()
            self.running_loss += loss.item()
            self.correct += (out.argmax(1) == y).sum().item()


FIG7 = ["dataset=synthetic", "dataset.channels=1", "dataset.image_size=28", "dataset.train_size=2048",
        "dataset.test_size=10000", "model=mlp", "model.bias=false", "model.parameterization=ntk", "method=sparse",
        "base_width=8", "optim=paper_mnist", "optim.batch_size=256", "seed=0"]


def _fig7(device: str):
    runs = [load([*FIG7, f"width={w}", f"device={device}"])[1] for w in FIG7_WIDTHS]
    spec = spec_from_config(runs[0].dataset)
    return runs, [plan_member(r.model, spec, r.base_width, r.width, r.method) for r in runs]


class FamilyBatched:
    """The Figure 7 family as one stacked model (what sweep-width's local launcher does). `epochs`:
    run(n) is n whole epochs as a sweep runs them (2,048 training samples, then the 10,000 test samples)."""

    def __init__(self, device: str, epochs: bool = False, path: str | None = None):
        self.device_name, self.epochs, self.path = device, epochs, path or sparse_ops.PATH

    def setup(self):
        runs, members = _fig7(self.device_name)
        self.stack = stacked_training.build(runs, members)
        self.opt, _ = make_optimizer(self.stack.model, runs[0].optim)

    def run(self, n: int):
        model, loaders = self.stack.model, self.stack.loaders
        sparse_ops.PATH = self.path  # variants take turns in one process
        for _ in range(n if self.epochs else 1):
            totals = stacked_training.train_epoch(model, loaders if self.epochs else [Steps(l, n) for l in loaders], self.opt)
            totals.loss.tolist()
            if self.epochs:
                stacked_training.evaluate(model, self.stack.test_loader).loss.tolist()


class FamilyOneByOne:
    """The same members, each trained on its own with our path (`widen train`'s), one after another."""

    def __init__(self, device: str, epochs: bool = False):
        self.device_name, self.epochs = device, epochs

    def setup(self):
        runs, members = _fig7(self.device_name)
        device = hardware.resolve_device(self.device_name)
        hardware.setup(device)
        loader, self.test_loader, spec = load_data(runs[0].dataset, runs[0].optim.batch_size, device, 0)
        self.members = []
        for run, member in zip(runs, members):
            torch.manual_seed(run.seed)
            model = build_model(run.model, run.width, spec).to(device)
            masks = sparsify(model, member, run.seed)
            opt, _ = make_optimizer(model, run.optim)
            self.members.append((model, masks, opt, loader.reseeded(run.seed)))

    def run(self, n: int):
        for model, masks, opt, loader in self.members:
            for _ in range(n if self.epochs else 1):
                train_epoch(model, loader if self.epochs else Steps(loader, n), opt, masks).mean_loss
                if self.epochs:
                    evaluate(model, self.test_loader).mean_loss


def make_variant(name: str, args, data: Path):
    return {
        "resnet-ours-sparse": lambda: OursResNet(data, args.device, "sparse", args.precision, args.compile),
        "resnet-ours-dense": lambda: OursResNet(data, args.device, "dense", args.precision, args.compile),
        "resnet-reference": lambda: ReferenceResNet(data, args.device, args.workers),
        "family-batched": lambda: FamilyBatched(args.device),
        "family-one-by-one": lambda: FamilyOneByOne(args.device),
        "family-batched-csr": lambda: FamilyBatched(args.device, path="csr"),
        "family-batched-embedding_bag": lambda: FamilyBatched(args.device, path="embedding_bag"),
        "family-batched-epochs": lambda: FamilyBatched(args.device, epochs=True),
        "family-one-by-one-epochs": lambda: FamilyOneByOne(args.device, epochs=True),
    }[name]()


# ---------------------------------------------------------------- measuring

def time_side_by_side(variants: dict, steps: int, warmup: int, rounds: int, device: torch.device) -> dict:
    """Seconds per step of each variant: its fastest round (the one least disturbed by other work on the
    machine), the variants' order rotating from round to round."""
    for v in variants.values():
        v.setup()
    for v in variants.values():
        v.run(warmup)
    sync(device)
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            variants[name].run(steps)
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    for name, t in times.items():
        print(f"  {name}: steps/s per round " + ", ".join(f"{1 / x:.2f}" for x in t), flush=True)
    return {name: min(t) for name, t in times.items()}


def peak_memory(name: str, args, data: Path) -> dict:
    """Run one variant alone in a fresh process and report its peak memory."""
    cmd = [sys.executable, __file__, "--variant", name, "--data", str(data), "--device", args.device,
           "--precision", args.precision, "--workers", str(args.workers), *(["--compile"] if args.compile else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM (ru_maxrss would include the parent's, kept across exec)."""
    try:
        line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def variant_main(args) -> None:
    """Child process of `peak_memory`: set up, a few steps, print the peaks as JSON."""
    if args.variant.startswith("resnet"):
        trust_checksums(args.data)
    device = hardware.resolve_device(args.device)
    v = make_variant(args.variant, args, args.data)
    v.setup()
    v.run(args.memory_steps)
    sync(device)
    peak = {"rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        peak["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(peak))


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads{gpu}; "
            f"torch {torch.__version__}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--only", default="resnet,masks,family,sparse,process,regrow,learned",
                   help="comma-separated: resnet, masks, family, sparse, process, regrow, learned")
    p.add_argument("--process-epochs", type=int, default=30, help="epochs of the whole-process benchmark")
    p.add_argument("--process-rounds", type=int, default=1, help="rounds of the whole-process benchmark")
    p.add_argument("--resnet-steps", type=int, default=3, help="steps per round, ResNet benchmarks")
    p.add_argument("--family-steps", type=int, default=50, help="steps per round, MLP family benchmark")
    p.add_argument("--warmup", type=int, default=2, help="steps before timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--precision", default="fp32", help="ours: fp32 or bf16")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile (long warm-up)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return variant_main(args)

    device = hardware.resolve_device(args.device)
    hardware.setup(device)
    only = set(args.only.split(","))
    rows, memory = [], {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        if only & {"resnet", "masks"}:
            print("writing a CIFAR-10-shaped dataset (50,000 + 10,000 random images) ...", flush=True)
            write_fake_cifar10(data)
            trust_checksums(data)
            names = ["resnet-ours-sparse"] + (["resnet-reference"] if "resnet" in only else []) \
                + (["resnet-ours-dense"] if "masks" in only else [])
            print(f"timing {', '.join(names)} ...", flush=True)
            t = time_side_by_side({n: make_variant(n, args, data) for n in names}, args.resnet_steps,
                                  args.warmup, args.rounds, device)
            if "resnet" in only:
                ratio = t["resnet-reference"] / t["resnet-ours-sparse"]
                target = TARGETS["resnet"][device.type]
                rows.append(("1. ResNet-18 w16 sparse, CIFAR-10 shaped, batch 128: ours vs reference",
                             f"{1 / t['resnet-ours-sparse']:.2f} vs {1 / t['resnet-reference']:.2f}",
                             f"{ratio:.2f}x faster", f">= {target:g}x", ratio >= target))
            if "masks" in only:
                extra = t["resnet-ours-sparse"] / t["resnet-ours-dense"] - 1
                rows.append(("2. mask overhead: sparse vs dense, same width, ours",
                             f"{1 / t['resnet-ours-sparse']:.2f} vs {1 / t['resnet-ours-dense']:.2f}",
                             f"{extra:+.1%} step time", "<= +5%", extra <= TARGETS["masks"]))
        if "family" in only:
            names = ["family-batched", "family-one-by-one"]
            print(f"timing {', '.join(names)} ...", flush=True)
            t = time_side_by_side({n: make_variant(n, args, data) for n in names}, args.family_steps,
                                  args.warmup * 5, args.rounds, device)
            ratio = t["family-one-by-one"] / t["family-batched"]
            target = TARGETS["family"].get(device.type)
            rows.append((f"3. MLP Figure 7 family ({len(FIG7_WIDTHS)} widths, 784-d, batch 256): batched vs one "
                         "by one, training steps", f"{1 / t['family-batched']:.1f} vs {1 / t['family-one-by-one']:.1f}",
                         f"{ratio:.2f}x faster", f">= {target:g}x" if target else "-",
                         ratio >= target if target else None))
            names = ["family-batched-epochs", "family-one-by-one-epochs"]
            print(f"timing {', '.join(names)} ...", flush=True)
            t = time_side_by_side({n: make_variant(n, args, data) for n in names}, 1, 1, args.rounds, device)
            ratio = t["family-one-by-one-epochs"] / t["family-batched-epochs"]
            rows.append(("3b. the same, whole epochs as sweep-width runs them (8 steps, then 10,000 test images; "
                         "for information), epochs/s",
                         f"{1 / t['family-batched-epochs']:.2f} vs {1 / t['family-one-by-one-epochs']:.2f}",
                         f"{ratio:.2f}x faster", "-", None))
        if "sparse" in only:
            default = sparse_ops.PATH
            labels = {"family-batched": default, "family-batched-csr": "csr",
                      "family-batched-embedding_bag": "embedding_bag"}
            names = [n for n in labels if n == "family-batched" or labels[n] != default]
            print(f"timing {', '.join(names)} ...", flush=True)
            t = time_side_by_side({n: make_variant(n, args, data) for n in names}, args.family_steps,
                                  args.warmup * 5, args.rounds, device)
            base = t[names[0]]
            rows.append(("3c. the same steps on each sparse_ops path: " + " vs ".join(labels[n] for n in names)
                         + " (ms/step; step time as a multiple of the first)",
                         " vs ".join(f"{1e3 * t[n]:.1f}" for n in names),
                         " vs ".join(f"{t[n] / base:.2f}x" for n in names), "-", None))
            sparse_ops.PATH = default
        if "process" in only:
            import process

            print("timing the whole process: widen sweep-width against a plain loop ...", flush=True)
            rows += process.run(data / "process", args.process_epochs, args.process_rounds)
        if "regrow" in only:
            import mask_updates

            print("timing SET and RigL mask updates ...", flush=True)
            rows += mask_updates.run(args.device, args.rounds)
        if "learned" in only:
            import learned

            print("timing set and rigl epochs against sparse ...", flush=True)
            rows += learned.run(args.device, args.rounds)
        if not args.no_memory:
            names = [n for n, want in (("resnet-ours-sparse", only & {"resnet", "masks"}),
                                       ("resnet-reference", "resnet" in only),
                                       ("resnet-ours-dense", "masks" in only),
                                       ("family-batched", "family" in only),
                                       ("family-one-by-one", "family" in only)) if want]
            for name in names:
                print(f"peak memory of {name} (alone, in a subprocess) ...", flush=True)
                memory[name] = peak_memory(name, args, data)

    print(f"\nmachine: {machine(device)}")
    print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}\n")
    print("| benchmark | steps/s | result | target | met |\n|---|---|---|---|---|")
    for name, speeds, result, target, met in rows:
        print(f"| {name} | {speeds} | {result} | {target} | {'-' if met is None else 'yes' if met else 'NO'} |")
    if memory:
        cuda = device.type == "cuda"
        print(f"\n| 4. peak memory | process RSS (MiB){' | CUDA allocated (MiB)' if cuda else ''} |\n"
              f"|---|---{'|---' if cuda else ''}|")
        for name, peak in memory.items():
            cells = [name, f"{peak['rss_mb']:.0f}"] + ([f"{peak['cuda_mb']:.0f}"] if cuda else [])
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
