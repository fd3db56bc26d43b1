"""Image files of an image folder: decoding that names the file it fails on, and the scan that drops
unreadable files for `dataset.skip_bad_images`.

Where bad files are found, and why:
- By default, in the loader workers, as they decode each file: every file is decoded in the first
  epoch anyway, so this costs nothing and catches every failure (a non-image file, a truncated JPEG
  that only a full decode notices). The run stops with exit 2 naming the file, at the latest at the
  end of the first epoch. A scan up front would decode the whole dataset once more in every run (about
  1.3 million files for ImageNet: minutes to tens of minutes of CPU per member of a sweep).
- With skip_bad_images, in one scan before the first batch: the sample list must be fixed before
  training, since each epoch's order is drawn from (seed, epoch) over it, DDP ranks split it, and a
  resumed run must see the same list. The scan decodes every file in threads (PIL releases the GIL)
  with JPEG's draft mode (1/8 scale), which still reads every byte, so truncation is found.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from widen_cli.errors import UserError

# What PIL raises for a file it cannot decode: UnidentifiedImageError and truncation are OSErrors;
# some decoders raise SyntaxError or ValueError; huge images DecompressionBombError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
PREFIX = "cannot read image "


class BadImage(Exception):
    """An image file PIL cannot decode. Raised in a DataLoader worker, it reaches the main process as
    a new BadImage whose message is the worker's traceback; `message` recovers the line naming the file."""


def _reason(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "not in an image format PIL can read"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def read_rgb(path: str) -> Image.Image:
    """torchvision's default image loader (PIL, converted to RGB), naming the file when it fails."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except DECODE_ERRORS as e:
        raise BadImage(f"{PREFIX}{path} ({_reason(e)})") from None


def message(error: BadImage) -> str:
    """The one line naming the file, also from a BadImage re-raised from a worker's traceback."""
    found = re.search(re.escape(PREFIX) + r".*", str(error))
    return found.group(0) if found else str(error).strip().splitlines()[-1]


def unreadable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (1, 1))  # JPEG: decode at 1/8 scale (other formats decode in full)
            img.load()
        return False
    except DECODE_ERRORS:
        return True


def drop_unreadable(folder, threads: int) -> list[str]:
    """Remove the files PIL cannot decode from a torchvision ImageFolder; returns their paths."""
    paths = [path for path, _ in folder.samples]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        bad = [path for path, is_bad in zip(paths, pool.map(unreadable, paths)) if is_bad]
    if bad:
        skip = set(bad)
        folder.samples = [s for s in folder.samples if s[0] not in skip]
        folder.imgs, folder.targets = folder.samples, [label for _, label in folder.samples]
    return bad


def skip_unreadable(root, folders, threads: int) -> list[str]:
    """Drop unreadable files from every ImageFolder and say how many, once (rank 0)."""
    from rich.console import Console

    from widen_cli.distributed import is_main_process

    bad = [path for folder in folders for path in drop_unreadable(folder, threads)]
    for folder in folders:
        if not folder.samples:
            raise UserError(f"no readable image left under {folder.root} (--skip-bad-images left out every file)")
    if bad and is_main_process():
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning:[/yellow] skipped {len(bad)} unreadable image{'s' * (len(bad) > 1)} under "
            f"{root} (--skip-bad-images): {shown}", highlight=False)
    return bad
