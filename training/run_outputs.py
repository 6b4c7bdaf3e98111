"""Publishing what a training run wrote (segmentation and detection alike): the package through the run's
transaction (:func:`tiling.transaction.stage`), so a failed run publishes nothing, and the report."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tiling.transaction import Move, stage


def publish_package(run: Any, write: Callable[[Path], None]) -> tuple[Path, str]:
    """``write(temp)`` writes the package to a hidden name beside ``run.request.output`` (removed if it fails), then
    the transaction moves it into place; the checkpoint folder goes once it is published, except after a cancel (a
    run started again continues from it). Returns the output path and the SHA-256 of the last epoch's weights."""
    output = Path(run.request.output)
    temp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial.drpk")
    try:
        write(temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    keep = run.stopped == "cancelled"
    stage([Move(temp, output)], None if keep else lambda: shutil.rmtree(run.work, ignore_errors=True))
    return output, run.final_digest()


def write_report(run: Any, report: Any, drawn_split_warning: str) -> None:
    """Write ``report`` where the request asks, warning with ``drawn_split_warning`` when the run's data had no
    split of its own (one was drawn at random)."""
    if run.data.drawn_split:
        report.warnings.append(drawn_split_warning)
    report.write(run.request.report_html, run.request.report_json)


def data_band_names(run: Any) -> list[str]:
    """The band names of ``run``'s data (``band N`` where the folder records none, or not one per band)."""
    names = list(run.folder.bands) if len(run.folder.bands) == run.data.band_count else []
    return [n or f"band {i + 1}" for i, n in enumerate(names or [""] * run.data.band_count)]
