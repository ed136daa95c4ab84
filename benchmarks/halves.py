"""The fixed halves of a photo folder: fit and tune on one, report on the other, never the reverse.

A photo belongs to the held-out half iff int(sha1(file name)) is odd; the rule depends on the name
alone, so every script and session splits ../shared/photos the same way.

    .venv/bin/python benchmarks/halves.py ../shared/photos --out /tmp/halves   # -> /tmp/halves/{tune,holdout}
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path


def half_of(name: str) -> str:
    """'holdout' or 'tune' for a file name (its base name, e.g. n01440764_tench.jpg)."""
    return "holdout" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 2 else "tune"


def make_halves(photos: str | os.PathLike, out: str | os.PathLike) -> dict[str, Path]:
    """Two folders of symbolic links into `photos`: out/tune and out/holdout."""
    out = Path(out)
    folders = {h: out / h for h in ("tune", "holdout")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for photo in sorted(Path(photos).iterdir()):
        if photo.is_file() and not photo.name.startswith(".") and photo.suffix.lower() in (".jpg", ".jpeg", ".png"):
            link = folders[half_of(photo.name)] / photo.name
            if not link.exists():
                link.symlink_to(photo.resolve())
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for half, folder in make_halves(args.photos, args.out).items():
        print(half, folder, len(list(folder.iterdir())))


if __name__ == "__main__":
    main()
