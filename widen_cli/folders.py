"""The file list of an image folder (<root>/train/<class>/..., <root>/val/<class>/...), with links.

torchvision's ImageFolder walks each class folder following every link to a folder: a link that
points back up (a loop) multiplies the samples until the path gets too long, with no error, and a
link out of the dataset reads whatever it points at. Here:
- the root, train/, val/ and each class folder may themselves be links (a subset of a larger dataset
  made of linked class folders): each is where a walk starts;
- inside a class folder, a link to a folder is refused with one line naming it (a loop, a folder out
  of the dataset, or another folder of the dataset whose images could be read twice or under the
  wrong class): it is never followed;
- a link to a file is read when the file lies under the dataset root (or under the split or class
  folder the walk started from), and refused when it leads out of it.
"""
from __future__ import annotations

import os

from torchvision import datasets
from torchvision.datasets.folder import has_file_allowed_extension

from widen_cli.errors import UserError

ADVICE = ("widen does not follow links to folders inside a class folder; replace the link by the files, or "
          "link the class folder itself")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def samples(directory: str, class_to_idx: dict[str, int], extensions=None, is_valid_file=None) -> list[tuple[str, int]]:
    """(path, class index) of every image file under directory/<class>, in torchvision's order (folders
    by path, files by name); links as the module docstring says (a refused one is a UserError)."""
    if is_valid_file is None:
        def is_valid_file(path: str) -> bool:
            return has_file_allowed_extension(path, extensions)
    directory = os.path.expanduser(directory)
    root = os.path.realpath(os.path.dirname(os.path.abspath(directory)))  # <root>, of <root>/train
    out = []
    for cls in sorted(class_to_idx):
        top = os.path.join(directory, cls)
        if not os.path.isdir(top):
            continue
        allowed = (root, os.path.realpath(directory), os.path.realpath(top))
        for _, files in sorted(_walk(top, root, allowed)):
            out.extend((path, class_to_idx[cls]) for path in sorted(files) if is_valid_file(path))
    return out


def _walk(top: str, root: str, allowed: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(folder, its file paths) for `top` and every folder under it, links not followed. scandir's
    entries know whether they are links without a system call per file (ImageNet has 1.3 million)."""
    found, stack = [], [top]
    while stack:
        here = stack.pop()
        files = []
        with os.scandir(here) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_symlink():
                    if os.path.isdir(entry.path):
                        _refuse_folder_link(entry.path, os.path.realpath(here), root)
                    target = os.path.realpath(entry.path)
                    if os.path.exists(target) and not any(_under(target, a) for a in allowed):
                        raise UserError(f"image folder link {entry.path} -> {target} leads out of the dataset "
                                        f"root {root}; widen reads only files under it (copy the file in instead)")
                    files.append(os.path.join(here, entry.name))  # a dangling one fails to decode, named
                else:
                    files.append(os.path.join(here, entry.name))
        found.append((here, files))
    return found


def _refuse_folder_link(link: str, here: str, root: str) -> None:
    target = os.path.realpath(link)
    if _under(here, target):
        why = f"loops back to {target}, a folder it is in"
    elif not _under(target, root):
        why = f"leads out of the dataset root {root}"
    else:
        why = f"points at another folder of the dataset ({target}), whose images could be read twice"
    raise UserError(f"image folder link {link} {why}; {ADVICE}")


class ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder with the file list of `samples`."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        found = samples(directory, class_to_idx, extensions, is_valid_file)
        present = {i for _, i in found}
        empty = sorted(cls for cls, i in class_to_idx.items() if i not in present)
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
        return found
