"""The user's caches stay bounded: least recently used entries go first; the entry just written, entries in use and
hidden (temporary) names stay; a hit renews an entry. Real archives through ``extract_archive``."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from deepraster.models.archive import cache_root, extract_archive
from deepraster.models.cache import IN_USE_SECONDS, cache_home, limit_bytes, prune
from deepraster.models.onnx_export import user_cache_dir

MIB = 1024**2


def entry(folder: Path, name: str, size: int, age_s: float, is_dir: bool = True) -> Path:
    """A cache entry of ``size`` bytes last used ``age_s`` seconds ago."""
    path = folder / name
    if is_dir:
        path.mkdir(parents=True)
        (path / "weights.bin").write_bytes(b"\0" * size)
    else:
        path.write_bytes(b"\0" * size)
    used = time.time() - age_s
    os.utime(path, (used, used))
    return path


def test_least_recently_used_go_first_until_the_bound(tmp_path):
    hour = IN_USE_SECONDS
    old, older, oldest = (entry(tmp_path, n, MIB, a) for n, a in (("a", 2 * hour), ("b", 3 * hour), ("c", 4 * hour)))
    onnx = entry(tmp_path, "m.onnx", MIB, 5 * hour, is_dir=False)
    new = entry(tmp_path, "new", MIB, 0)
    lines: list[str] = []
    removed = prune(tmp_path, keep=new, info=lines.append, limit=3 * MIB)
    assert removed == [onnx, oldest]
    assert {p.name for p in tmp_path.iterdir()} == {old.name, older.name, new.name}
    assert "2 least recently used entries removed" in lines[0] and "DEEPRASTER_CACHE_LIMIT_GIB" in lines[0]


def test_the_new_entry_entries_in_use_and_hidden_names_stay(tmp_path):
    big_new = entry(tmp_path, "new", 3 * MIB, 0)
    in_use = entry(tmp_path, "in-use", MIB, IN_USE_SECONDS / 2)
    partial = entry(tmp_path, ".export.part", MIB, 10 * IN_USE_SECONDS, is_dir=False)
    assert prune(tmp_path, keep=big_new, limit=MIB) == []
    assert big_new.exists() and in_use.exists() and partial.exists()


def test_a_missing_folder_or_a_bad_setting_changes_nothing(tmp_path, monkeypatch):
    assert prune(tmp_path / "absent", keep=tmp_path / "absent" / "x", limit=0) == []
    monkeypatch.setenv("DEEPRASTER_CACHE_LIMIT_GIB", "lots")
    assert limit_bytes() == 5 * 1024**3
    monkeypatch.setenv("DEEPRASTER_CACHE_LIMIT_GIB", "0.5")
    assert limit_bytes() == 512 * MIB


def test_both_caches_follow_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPRASTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_home() == tmp_path / "deepraster"
    assert cache_root() == tmp_path / "deepraster" / "packages"
    assert user_cache_dir() == tmp_path / "deepraster" / "onnx"


def archive(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.json", "{}")
        z.writestr("weights.bin", payload)
    return path


@pytest.mark.parametrize("limit_mib", [1.5])
def test_extracting_archives_keeps_the_package_cache_bounded(tmp_path, monkeypatch, limit_mib):
    """Three 1 MiB archives under a 1.5 MiB bound: the oldest unused extraction goes; a hit renews its entry."""
    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPRASTER_CACHE_LIMIT_GIB", str(limit_mib / 1024))
    first = extract_archive(archive(tmp_path / "a.drpk", b"a" * MIB))
    second = extract_archive(archive(tmp_path / "b.drpk", b"b" * MIB))  # both in use: nothing pruned yet
    assert first.is_dir() and second.is_dir()
    long_ago = time.time() - 3 * IN_USE_SECONDS
    os.utime(first, (long_ago, long_ago))
    os.utime(second, (long_ago - 1, long_ago - 1))
    assert extract_archive(tmp_path / "a.drpk") == first  # a hit: first is in use again
    third = extract_archive(archive(tmp_path / "c.drpk", b"c" * MIB))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.name, third.name])
    assert not second.exists()
