"""The user's caches stay bounded: least recently used entries go first; the entry just written, entries in use and
hidden (temporary) names stay; a hit renews an entry. Real archives through ``extract_archive``."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from deepraster.models.archive import cache_root, extract_archive
from deepraster.models.cache import (
    ARCHIVE_ENTRY,
    IN_USE_SECONDS,
    ONNX_ENTRY,
    STALE_TEMP_SECONDS,
    cache_home,
    limit_bytes,
    prune,
)
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


def hexname(char: str) -> str:
    return char * 64


def test_least_recently_used_go_first_until_the_bound(tmp_path):
    hour = IN_USE_SECONDS
    old, older, oldest = (entry(tmp_path, hexname(n), MIB, a) for n, a in (("a", 2 * hour), ("b", 3 * hour),
                                                                              ("c", 4 * hour)))
    oldest_of_all = entry(tmp_path, hexname("d"), MIB, 5 * hour)
    new = entry(tmp_path, hexname("e"), MIB, 0)
    lines: list[str] = []
    removed = prune(tmp_path, keep=new, entry_name=ARCHIVE_ENTRY, info=lines.append, limit=3 * MIB)
    assert removed == [oldest_of_all, oldest]
    assert {p.name for p in tmp_path.iterdir()} == {old.name, older.name, new.name}
    assert "2 least recently used entries removed" in lines[0] and "DEEPRASTER_CACHE_LIMIT_GIB" in lines[0]


def test_the_new_entry_entries_in_use_and_files_not_of_the_cache_stay(tmp_path):
    """Only names the cache writes are entries: a user's own files in a folder named by DEEPRASTER_CACHE_DIR stay,
    however old; a writer's fresh temporary file stays, an old leftover goes."""
    big_new = entry(tmp_path, hexname("a"), 3 * MIB, 0)
    in_use = entry(tmp_path, hexname("b"), MIB, IN_USE_SECONDS / 2)
    users = [entry(tmp_path, "my_model.drpk", MIB, 100 * IN_USE_SECONDS, is_dir=False),
             entry(tmp_path, ".git", MIB, 100 * IN_USE_SECONDS),
             entry(tmp_path, "m-" + "0" * 24 + ".onnx", MIB, 100 * IN_USE_SECONDS, is_dir=False)]  # not an archive
    partial = entry(tmp_path, ".export.part", MIB, STALE_TEMP_SECONDS / 2, is_dir=False)
    leftovers = [entry(tmp_path, ".extract-x1", MIB, 2 * STALE_TEMP_SECONDS),
                 entry(tmp_path, ".trash-" + "f" * 32, MIB, 2 * STALE_TEMP_SECONDS)]
    assert prune(tmp_path, keep=big_new, entry_name=ARCHIVE_ENTRY, limit=0) == []
    assert all(p.exists() for p in (big_new, in_use, partial, *users))
    assert not any(p.exists() for p in leftovers)


def test_onnx_entries_are_named_by_their_export_key():
    """Exports (files) and the graphs optimised for a CPU (folders) are entries; partials are not."""
    assert ONNX_ENTRY.fullmatch("ukis-csmask-6b-l1c-92d4de0a5864302146d23ed5.onnx")
    assert ONNX_ENTRY.fullmatch("ukis-csmask-6b-l1c-92d4de0a5864302146d23ed5-41446699679740f7820079fb.optimized")
    assert not ONNX_ENTRY.fullmatch("ukis.onnx") and not ONNX_ENTRY.fullmatch(".x-92d4de0a5864302146d23ed5.onnx.part")
    assert not ONNX_ENTRY.fullmatch(".x-92d4de0a5864302146d23ed5.optimized-k2j4.part")


def test_an_entry_deleted_meanwhile_does_not_stop_the_pruning(tmp_path, monkeypatch):
    """An entry that another process deletes while this one measures it is passed over; the others are pruned."""
    import deepraster.models.cache as cache

    old, vanishing = entry(tmp_path, hexname("a"), MIB, 3 * IN_USE_SECONDS), entry(tmp_path, hexname("b"), MIB,
                                                                                    2 * IN_USE_SECONDS)
    new = entry(tmp_path, hexname("c"), MIB, 0)
    measure = cache.entry_bytes

    def deleted_meanwhile(path: Path) -> int:
        if path == vanishing:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return measure(path)

    monkeypatch.setattr(cache, "entry_bytes", deleted_meanwhile)
    assert prune(tmp_path, keep=new, entry_name=ARCHIVE_ENTRY, limit=MIB) == [old]


def test_a_missing_folder_or_a_bad_setting_changes_nothing(tmp_path, monkeypatch):
    assert prune(tmp_path / "absent", keep=tmp_path / "absent" / "x", entry_name=ARCHIVE_ENTRY, limit=0) == []
    for text, gib in (("lots", 5), ("nan", 5), ("0.5", 0.5)):
        monkeypatch.setenv("DEEPRASTER_CACHE_LIMIT_GIB", text)
        assert limit_bytes() == int(gib * 1024**3)
    monkeypatch.setenv("DEEPRASTER_CACHE_LIMIT_GIB", "inf")  # no bound
    assert limit_bytes() == 2**63 - 1
    entry(tmp_path, hexname("a"), MIB, 10 * IN_USE_SECONDS)
    assert prune(tmp_path, keep=tmp_path / "new", entry_name=ARCHIVE_ENTRY) == []


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
