"""Where a download may write: inside its storage root, with room to spare."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models_app.transfer import (
    InsufficientSpace,
    UnsafePath,
    check_free_space,
    resolve_inside,
    resolve_inside_any,
)


def test_a_relative_path_resolves_inside_the_root(tmp_path):
    assert resolve_inside(tmp_path, "org/repo/m.gguf") == tmp_path.resolve() / "org/repo/m.gguf"


def test_an_absolute_path_inside_the_root_is_accepted(tmp_path):
    assert resolve_inside(tmp_path, tmp_path / "m.gguf") == tmp_path.resolve() / "m.gguf"


@pytest.mark.parametrize("path", ["../m.gguf", "org/../../m.gguf", "org/..", "a/\0b"])
def test_it_rejects_dot_dot_and_nul_bytes(tmp_path, path):
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path / "root", path)


def test_it_rejects_an_absolute_path_outside_the_root(tmp_path):
    with pytest.raises(UnsafePath, match="outside the storage root"):
        resolve_inside(tmp_path / "root", "/etc/passwd")


def test_it_rejects_a_symlink_that_leaves_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)

    with pytest.raises(UnsafePath):
        resolve_inside(root, "escape/m.gguf")


def test_a_symlink_that_stays_inside_the_root_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")

    assert resolve_inside(tmp_path, "alias/m.gguf") == tmp_path.resolve() / "real/m.gguf"


def test_an_absolute_path_may_be_in_any_of_the_roots(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"

    assert resolve_inside_any([first, second], second / "m.gguf") == second / "m.gguf"
    assert resolve_inside_any([first, second], "m.gguf") == first / "m.gguf"
    with pytest.raises(UnsafePath, match="outside the storage roots"):
        resolve_inside_any([first, second], tmp_path / "c" / "m.gguf")


def fake_disk(monkeypatch, free: int) -> list[Path]:
    asked: list[Path] = []

    def disk_usage(path):
        asked.append(Path(path))
        return shutil._ntuple_diskusage(10 * free, 9 * free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    return asked


def test_free_space_refuses_when_the_disk_cannot_hold_the_rest_plus_the_margin(
    tmp_path, monkeypatch
):
    fake_disk(monkeypatch, free=3 * 1024**3)

    check_free_space(tmp_path, 2 * 1024**3, margin=1024**3)  # exactly fits
    with pytest.raises(InsufficientSpace, match=r"has 3.00 GiB free; the download needs 2.50 GiB"):
        check_free_space(tmp_path, 5 * 1024**3 // 2, margin=1024**3)


def test_free_space_is_checked_on_the_closest_existing_parent(tmp_path, monkeypatch):
    asked = fake_disk(monkeypatch, free=10**12)

    check_free_space(tmp_path / "not" / "yet", 1)

    assert asked == [tmp_path.resolve()]
