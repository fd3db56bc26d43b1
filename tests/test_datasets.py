"""The dataset registry (widen_cli/datasets) against what the loaders read and the shipped configs say."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from widen_cli import cost, datasets, memory
from widen_cli.schema import DatasetConfig
from widen_cli.data import load_data

CPU = torch.device("cpu")
CONF = Path(__file__).parents[1] / "conf" / "dataset"


@pytest.mark.parametrize("name", datasets.names())
def test_every_entry_has_a_shipped_config_that_agrees(name):
    """One conf/dataset YAML per entry, with the entry's channels, image side and classes as defaults."""
    entry, conf = datasets.get(name), yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert conf["name"] == name and conf["channels"] == entry.channels
    assert entry.side is None or conf["image_size"] == entry.side
    assert entry.classes is None or conf["num_classes"] == entry.classes
    assert set(conf["augment"]) <= set(entry.augmentations)


@pytest.mark.parametrize("cfg", [DatasetConfig(name="digits", num_classes=10, image_size=8, channels=1),
                                 DatasetConfig(name="synthetic", num_classes=3, image_size=4, train_size=30,
                                               test_size=11)], ids=["digits", "synthetic"])
def test_generated_sizes_are_what_the_loader_reads(cfg):
    train, test, _ = load_data(cfg, batch_size=64, device=CPU, seed=0)
    assert datasets.get(cfg.name).sizes(cfg) == (train.num_samples, test.num_samples)
    assert cost.train_images(cfg) == (train.num_samples, False)
    held = DatasetConfig(**{**cfg.__dict__, "val_fraction": 0.25})
    assert cost.train_images(held).count == load_data(held, batch_size=64, device=CPU, seed=0)[0].num_samples
    pixels = (train.num_samples + test.num_samples) * cfg.channels * cfg.image_size ** 2
    assert memory.data_bytes(cfg) == pixels  # read at its own side: no resized copy


def test_image_folder_count_is_what_the_loader_reads(tmp_path):
    from PIL import Image

    for part, counts in (("train", {"ant": 4, "bee": 3, "cat": 2}), ("val", {"ant": 1, "bee": 1, "cat": 1})):
        for cls, n in counts.items():
            (tmp_path / part / cls).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (10, 10), (30 * k, 0, 0)).save(tmp_path / part / cls / f"{k}.png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image: neither read nor counted")
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path), image_size=8, augment=("resized_crop",), workers=0)
    train, _, spec = load_data(cfg, batch_size=4, device=CPU, seed=0)
    assert datasets.get("imagefolder").train_images(cfg) == (train.num_samples, False) == (9, False)
    assert spec.num_classes == 3 and memory.data_bytes(cfg) == 0  # streamed, never held in memory


def test_unknown_name_is_refused_listing_the_entries():
    from widen_cli.errors import UserError

    with pytest.raises(UserError, match="dataset.name 'cifar11' names no dataset; valid: mnist, digits"):
        datasets.get("cifar11")
