"""Issue 12, items 2 and 14: outputs are committed together, all or nothing, and a full disk gives one clear
message (no "Exception ignored" traceback from GDAL's destructor)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from deepraster.tiling.errors import OutputError
from deepraster.tiling.transaction import Move, commit_all, publish
from deepraster.tiling.writer import GeoTiffWriter, RasterSpec
from helpers import REPO

SPEC = RasterSpec(64, 32, 1, np.dtype(np.uint8), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "")


def test_publish_is_all_or_nothing(tmp_path):
    old = {name: f"old {name}" for name in ("a", "b")}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
        (tmp_path / f".{name}.new").write_text(f"new {name}")
    (tmp_path / ".c.new").write_text("new c")
    moves = [Move(tmp_path / f".{n}.new", tmp_path / n) for n in "ab"]
    moves.append(Move(tmp_path / ".c.new", tmp_path / "gone" / "c"))  # its folder vanished: the third rename fails
    with pytest.raises(OutputError, match="No output was changed"):
        publish(moves)
    assert {n: (tmp_path / n).read_text() for n in "ab"} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_publish_replaces_and_removes_stale_sidecars(tmp_path):
    (tmp_path / "a").write_text("old")
    (tmp_path / "a.aux.xml").write_text("stale")
    (tmp_path / ".a.new").write_text("new")
    publish([Move(tmp_path / ".a.new", tmp_path / "a"), Move(tmp_path / ".a.new.aux.xml", tmp_path / "a.aux.xml")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (tmp_path / "a").read_text() == "new"


def test_commit_all_leaves_older_outputs_when_one_fails(tmp_path):
    first, second = tmp_path / "first.tif", tmp_path / "second.tif"
    first.write_bytes(b"older first")
    complete, incomplete = GeoTiffWriter(first, SPEC), GeoTiffWriter(second, SPEC)
    complete.write(0, np.ones((1, 32, 64), np.uint8))
    incomplete.write(0, np.ones((1, 8, 64), np.uint8))
    with pytest.raises(OutputError, match="only 8 of 32 rows"):
        commit_all([complete, incomplete])
    complete.abort()
    assert first.read_bytes() == b"older first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.tif"]
    writers = [GeoTiffWriter(first, SPEC), GeoTiffWriter(second, SPEC)]
    for w in writers:
        w.write(0, np.full((1, 32, 64), 7, np.uint8))
    assert commit_all(writers) == [first, second]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.tif", "second.tif"]


def test_disk_full_is_one_clear_message(tmp_path):
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        from deepraster.tiling.errors import OutputError
        from deepraster.tiling.writer import GeoTiffWriter, RasterSpec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, writes fail with EFBIG: a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        spec = RasterSpec(1024, 1024, 3, np.dtype(np.float32), (0, 1, 0, 0, 0, -1), "")
        rng = np.random.default_rng(0)
        try:
            with GeoTiffWriter({str(tmp_path / "o.tif")!r}, spec) as w:
                for r in range(0, 1024, 256):
                    w.write(r, rng.random((3, 256, 1024), dtype=np.float32))
                w.commit()
        except OutputError as e:
            print("MESSAGE:", e)
    """)
    env = {"PYTHONPATH": str(REPO / ".build" / "plugins"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "MESSAGE: Writing" in done.stdout and "Check free disk space" in done.stdout, done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_transaction_publishes_at_the_end_or_never(tmp_path):
    from deepraster.tiling.transaction import run_transaction

    target = tmp_path / "a.tif"
    target.write_bytes(b"older")
    for fail in (True, False):
        writer = GeoTiffWriter(target, SPEC)
        writer.write(0, np.full((1, 32, 64), 3, np.uint8))
        with contextlib.suppress(RuntimeError), run_transaction():
            assert commit_all([writer]) == [target]
            assert target.read_bytes() == b"older"  # not yet: at the end of the run
            if fail:
                raise RuntimeError("a later step of the run failed")
        assert (target.read_bytes() == b"older") is fail
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
