"""The reference for bench/process.py: a plain PyTorch loop, as most research code trains a family of
sparse MLPs, one model after another in one process: torchvision's MNIST, a DataLoader, a random mask
per layer applied after every step, .item() per batch, evaluation on the test set after every epoch.

    python bench/plain_loop.py DATA_ROOT '{"widths": [...], "kept": [[first, last], ...], ...}'
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets


def tensors(root: str, train: bool) -> TensorDataset:
    ds = datasets.MNIST(root, train=train, download=False)
    x = ds.data.float().div(255).sub(0.1307).div(0.3081).view(len(ds), -1)
    return TensorDataset(x, ds.targets)


def masked_mlp(width: int, kept: list[int], generator: torch.Generator):
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))
    masks = []
    for layer, k in zip((model[0], model[2]), kept):
        mask = torch.zeros(layer.weight.numel(), dtype=torch.bool)
        mask[torch.randperm(mask.numel(), generator=generator)[:k]] = True
        masks.append((layer.weight, mask.view_as(layer.weight)))
    with torch.no_grad():
        for w, m in masks:
            w.mul_(m)
    return model, masks


def main() -> None:
    root, spec = sys.argv[1], json.loads(sys.argv[2])
    torch.set_num_threads(spec["threads"])
    train, test = tensors(root, True), tensors(root, False)
    for width, kept in zip(spec["widths"], spec["kept"]):
        torch.manual_seed(0)
        model, masks = masked_mlp(width, kept, torch.Generator().manual_seed(0))
        opt = torch.optim.SGD(model.parameters(), lr=spec["lr"])
        loader = DataLoader(train, batch_size=spec["batch_size"], shuffle=True)
        for epoch in range(spec["epochs"]):
            model.train()
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for w, m in masks:
                        w.mul_(m)
                loss.item()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in DataLoader(test, batch_size=1000):
                    correct += (model(x).argmax(1) == y).sum().item()
        print(f"width {width}: test accuracy {correct / len(test):.3f}", flush=True)


if __name__ == "__main__":
    main()
