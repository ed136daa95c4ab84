import os
from pathlib import Path

import pytest

from copyscope.pipeline.failures import Failure
from copyscope.pipeline.files import IMAGE_EXTENSIONS, ImageListing, image_id, list_images
from tests.badfiles import make_bad_corpus


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_image_id(tmp_path):
    assert image_id(tmp_path, tmp_path / "a" / "b.png") == "a/b"
    assert image_id(str(tmp_path), str(tmp_path / "c.d.JPG")) == "c.d"
    with pytest.raises(ValueError, match="not inside"):
        image_id(tmp_path / "a", tmp_path / "b.png")


def test_listing_ids_sorting_and_filters(tmp_path):
    _touch(tmp_path, "b.jpg", "a.PNG", "z/y.webp", "m/n/o.tiff", "notes.txt", "noext",
           ".hidden.jpg", ".cache/c.jpg", "m/.git/d.png", *[f"ext/e{ext}" for ext in IMAGE_EXTENSIONS])
    listing = list_images(tmp_path)
    ids = [i for i, _ in listing.entries]
    assert ids == ["a", "b", "ext/e", "m/n/o", "z/y"]
    assert listing.failures == [
        Failure(str(tmp_path / f"ext/e{ext}"), f"duplicate id 'ext/e' (also {tmp_path / 'ext/e.bmp'})")
        for ext in sorted(IMAGE_EXTENSIONS) if ext != ".bmp"
    ]
    for iid, path in listing.entries:
        assert os.path.isabs(path) and image_id(tmp_path, path) == iid


def test_duplicate_keeps_first_by_path(tmp_path):
    _touch(tmp_path, "a.png", "a.jpg", "sub/a.jpg")
    listing = list_images(tmp_path)
    assert listing.entries == [("a", str(tmp_path / "a.jpg")), ("sub/a", str(tmp_path / "sub/a.jpg"))]
    reason = f"duplicate id 'a' (also {tmp_path / 'a.jpg'})"
    assert listing.failures == [Failure(str(tmp_path / "a.png"), reason)]


def test_symlinks(tmp_path):
    _touch(tmp_path, "real/x.jpg")
    os.symlink("nowhere.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "real", tmp_path / "linked_dir")
    listing = list_images(tmp_path)
    assert [i for i, _ in listing.entries] == ["broken", "real/x"]  # folder links are not followed


def test_empty_folder_and_bad_roots(tmp_path):
    assert list_images(tmp_path) == ImageListing(entries=[], failures=[])
    _touch(tmp_path, "f.jpg")
    for root in (tmp_path / "f.jpg", tmp_path / "missing"):
        with pytest.raises(NotADirectoryError, match="not a directory"):
            list_images(root)


def test_unreadable_folder_is_a_failure(tmp_path, monkeypatch):
    _touch(tmp_path, "ok.jpg", "locked/x.jpg")
    locked, scandir = str(tmp_path / "locked"), os.scandir

    def refuse_locked(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    listing = list_images(tmp_path)
    assert [i for i, _ in listing.entries] == ["ok"]
    assert listing.failures == [Failure(locked, "unreadable folder: Permission denied")]


def test_bad_corpus_listing(tmp_path):
    expected = make_bad_corpus(tmp_path)
    listing = list_images(tmp_path)
    assert [i for i, _ in listing.entries] == sorted(os.path.splitext(n)[0] for n in expected)
    assert listing.failures == []
