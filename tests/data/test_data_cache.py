"""The disk cache of decoded images: reused when current, rebuilt when the data changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.data import splits as data_module
from compressor.data.splits import load_image_folder
from compressor.files import default_cache_dir
from tests.fakes import write_image_folder

SHAPE = (1, 8, 8)


def _folder(root: Path, per_class: int = 6) -> Path:
    write_image_folder(root, per_class, ("a", "b"), mode="L")
    return root


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("images-*.pt"))


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = data_module._decode_all

    def counting(samples, preprocess):
        calls.append(len(samples))
        return real(samples, preprocess)

    monkeypatch.setattr(data_module, "_decode_all", counting)
    return calls


def _same(a, b) -> None:
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)


def test_second_load_reads_the_cache_and_gives_identical_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    calls = _count_decodes(monkeypatch)
    uncached = load_image_folder(root, SHAPE, seed=3)
    logged: list[str] = []
    first = load_image_folder(root, SHAPE, seed=3, cache_dir=cache, log=logged.append)
    assert len(calls) == 2 and len(_entries(cache)) == 1
    second = load_image_folder(root, SHAPE, seed=3, cache_dir=cache, log=logged.append)
    assert len(calls) == 2  # no decode the second time
    assert "stored" in logged[0] and "reused" in logged[1]
    _same(uncached, first)
    _same(first, second)


@pytest.mark.parametrize("change", ["modify", "add", "remove"])
def test_changed_data_invalidates_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    load_image_folder(root, SHAPE, cache_dir=cache)
    old = _entries(cache)
    target = root / "a" / "0.png"
    if change == "modify":
        Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(target)
        os.utime(target, ns=(1, 1))  # a different mtime even on coarse file systems
    elif change == "add":
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "b" / "new.png")
    else:
        target.unlink()
    calls = _count_decodes(monkeypatch)
    fresh = load_image_folder(root, SHAPE, cache_dir=cache)
    assert calls == [11 if change == "remove" else 12 + (change == "add")]
    assert _entries(cache) != old and len(_entries(cache)) == 1  # the stale entry is gone
    _same(fresh, load_image_folder(root, SHAPE))


def test_damaged_entry_is_rebuilt_and_other_shapes_get_their_own(tmp_path: Path) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    load_image_folder(root, SHAPE, cache_dir=cache)
    (entry,) = _entries(cache)
    entry.write_bytes(b"torn")
    again = load_image_folder(root, SHAPE, cache_dir=cache)
    _same(again, load_image_folder(root, SHAPE))
    assert entry.stat().st_size > 100  # rewritten
    load_image_folder(root, (3, 16, 16), cache_dir=cache)
    assert len(_entries(cache)) == 2


def test_unwritable_cache_costs_the_decode_not_the_run(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    logged: list[str] = []
    splits = load_image_folder(root, SHAPE, cache_dir=blocked / "cache", log=logged.append)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12
    assert any("data cache not written" in line for line in logged)


def test_default_cache_dir_honours_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", "/x/y")
    assert default_cache_dir() == Path("/x/y")
    monkeypatch.delenv("COMPRESSOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == Path("/xdg/compressor")


def test_only_rank_zero_writes_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    monkeypatch.setenv("RANK", "1")  # as torchrun sets it for the second process
    load_image_folder(root, SHAPE, cache_dir=cache)
    assert _entries(cache) == []
    monkeypatch.setenv("RANK", "0")
    load_image_folder(root, SHAPE, cache_dir=cache)
    assert len(_entries(cache)) == 1
