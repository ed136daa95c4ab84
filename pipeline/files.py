"""Find the images under a folder and give each its id: the relative path without extension."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from copyscope.pipeline.failures import Failure

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageListing:
    """entries: (image_id, absolute path) sorted by id; failures: duplicates, unreadable folders."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def image_id(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """root/a/b.png -> "a/b" (posix separators on every OS). Raises ValueError outside root."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{os.fspath(path)!r} is not inside {os.fspath(root)!r}")
    return os.path.splitext(rel)[0].replace(os.sep, "/")


def relative_path(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """Path of `path` relative to `root`, posix separators (as failures.csv reports it)."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def list_images(root: str | os.PathLike) -> ImageListing:
    """Every image file under `root`, recursively, skipping hidden files and folders.

    Symlinked folders are not followed; symlinked files are listed even when broken (decoding
    reports them). When two files share an id (a.jpg, a.png) the first by path is kept and the
    others become failures, as do folders that cannot be read.
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder {root!r} is not a directory")
    failures: list[Failure] = []
    paths = sorted(_walk(root, failures), key=lambda p: os.path.relpath(p, root).split(os.sep))
    kept: dict[str, str] = {}
    for path in paths:
        iid = image_id(root, path)
        if iid in kept:
            failures.append(Failure(path, f"duplicate id {iid!r} (also {kept[iid]})"))
        else:
            kept[iid] = path
    return ImageListing(entries=sorted(kept.items()), failures=failures)


def find_image(folder: str | os.PathLike, image_id: str) -> Path | None:
    """The file of `image_id` (a path relative to folder, without extension) trying IMAGE_EXTENSIONS in
    lower and upper case, or None; an id that leads outside `folder` (`../x`) finds nothing."""
    root = os.path.normpath(folder)
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        path = os.path.normpath(os.path.join(root, image_id + ext))
        if path.startswith(root + os.sep) and os.path.isfile(path):
            return Path(path)
    return None


def _walk(root: str, failures: list[Failure]) -> list[str]:
    def on_error(e: OSError) -> None:
        failures.append(Failure(e.filename, f"unreadable folder: {e.strerror}"))

    found = []
    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(folder, f) for f in files if _is_image_name(f)]
    return found


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def file_stamp(path: str | os.PathLike) -> str:
    """"size:mtime_ns" of a file (what says it changed since it was indexed), or "missing"."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"
