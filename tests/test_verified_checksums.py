"""A weights file's checksum is read once and recorded with the file's identity; an unchanged file is not read
again (for a week at most), a changed one always is, also when its size and modification time were kept."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from deepraster.models import verified_checksums
from deepraster.models.errors import ModelPackageError
from deepraster.models.package import load_package

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the record is used on Linux only")


@pytest.fixture
def reads(monkeypatch, tmp_path) -> list[str]:
    """A fresh user cache; files written by a test count as settled at once; the names of the files whose bytes
    were read to compute a checksum."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(verified_checksums, "RACY_SECONDS", -1.0)
    if not verified_checksums._trusted_path(tmp_path):
        pytest.skip("the test folder is not on a filesystem the record trusts")
    seen: list[str] = []
    real = verified_checksums._read_digest
    monkeypatch.setattr(verified_checksums, "_read_digest", lambda f: seen.append(Path(f.name).name) or real(f))
    return seen


def rewrite_keeping_size_and_time(path: Path, data: bytes) -> None:
    """Change the content of ``path`` in place, then put its modification time back (its change time moves on)."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_an_unchanged_file_is_read_once(reads, tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(os.urandom(1 << 20))
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert verified_checksums.file_sha256(weights) == expected
    assert verified_checksums.file_sha256(weights) == expected
    assert reads == ["w.bin"]
    record = json.loads(verified_checksums.record_path().read_text(encoding="utf-8"))
    assert list(record) == [str(weights.resolve())]


def test_a_changed_file_is_read_again_even_with_its_size_and_time_kept(reads, tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 4096)
    first = verified_checksums.file_sha256(weights)
    rewrite_keeping_size_and_time(weights, b"b" * 4096)
    assert verified_checksums.file_sha256(weights) == hashlib.sha256(b"b" * 4096).hexdigest() != first
    replacement = tmp_path / "other.bin"
    replacement.write_bytes(b"c" * 4096)
    os.replace(replacement, weights)  # a new file in its place
    assert verified_checksums.file_sha256(weights) == hashlib.sha256(b"c" * 4096).hexdigest()
    assert len(reads) == 3


def test_a_tampered_package_is_still_refused(reads, tmp_path, model_4b_l1c):
    """The package opened once (its checksum recorded), then its weights altered in place with size and time kept:
    opening it again reads the file and refuses it."""
    folder = tmp_path / "pkg"
    shutil.copytree(model_4b_l1c, folder, ignore=shutil.ignore_patterns(".onnx"))
    package = load_package(folder)
    load_package(folder)
    assert reads == [package.weights_file.name]
    with open(package.weights_file, "rb") as f:
        head = f.read(64)
    rewrite_keeping_size_and_time(package.weights_file, bytes(reversed(head)))
    with pytest.raises(ModelPackageError, match="does not match the checksum"):
        load_package(folder)


def test_a_recorded_digest_is_trusted_for_a_week_at_most(reads, tmp_path, monkeypatch):
    """Bit rot keeps a file's identity: a week after its record, the file is read again."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w" * 100)
    verified_checksums.file_sha256(weights)
    later = time.time() + verified_checksums.TRUST_SECONDS + 60
    monkeypatch.setattr(verified_checksums.time, "time", lambda: later)
    verified_checksums.file_sha256(weights)
    verified_checksums.file_sha256(weights)
    assert len(reads) == 2


def test_a_file_just_written_or_on_another_filesystem_is_not_recorded(reads, tmp_path, monkeypatch):
    """A file changed within RACY_SECONDS of its reading, or on a filesystem whose change time cannot be trusted
    (FAT sticks, network drives), is read on every check."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"r" * 100)
    monkeypatch.setattr(verified_checksums, "RACY_SECONDS", 3600.0)
    verified_checksums.file_sha256(weights)
    verified_checksums.file_sha256(weights)
    monkeypatch.setattr(verified_checksums, "RACY_SECONDS", -1.0)
    monkeypatch.setattr(verified_checksums, "TRUSTED_FILESYSTEMS", frozenset({"vfat"}))
    verified_checksums.file_sha256(weights)
    verified_checksums.file_sha256(weights)
    assert len(reads) == 4 and not verified_checksums.record_path().exists()


def test_a_damaged_or_unwritable_record_costs_only_a_read(reads, tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 100)
    record = verified_checksums.record_path()
    record.parent.mkdir(parents=True)
    record.write_text("{not json", encoding="utf-8")
    expected = hashlib.sha256(b"x" * 100).hexdigest()
    assert verified_checksums.file_sha256(weights) == expected
    assert verified_checksums.file_sha256(weights) == expected and len(reads) == 1  # the record was rewritten
    monkeypatch.setenv("XDG_CACHE_HOME", str(weights))  # a file where the cache folder should be
    assert verified_checksums.file_sha256(weights) == expected and len(reads) == 2


def test_the_record_keeps_the_most_recent_files(reads, tmp_path, monkeypatch):
    monkeypatch.setattr(verified_checksums, "MAX_ENTRIES", 2)
    files = []
    for name in "abc":
        files.append(tmp_path / name)
        files[-1].write_bytes(name.encode())
        verified_checksums.file_sha256(files[-1])
    record = json.loads(verified_checksums.record_path().read_text(encoding="utf-8"))
    assert list(record) == [str(f.resolve()) for f in files[1:]]
