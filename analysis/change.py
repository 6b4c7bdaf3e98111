"""The QGIS-free entry points of change detection between two rasters of the same place (two dates).

:func:`class_change`: two class rasters → a from–to change raster (0 = no change, one code per changed pair, see
:mod:`analysis.change_classes`) and a from–to area table. :func:`feature_change`: two feature rasters (any bands,
the same count) → a change score ``1 − cosine similarity`` and a change mask (Otsu's or a given threshold, see
:mod:`analysis.change_features`). The second raster is put on the first's grid (:mod:`analysis.change_inputs`);
every pass streams windows through :mod:`tiling.pixel_reader` / :func:`tiling.pixelwise.map_pixels`, so memory
does not depend on the raster size. Progress: the counting pass 0–40 %, writing 40–100 %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..tiling.callbacks import Callbacks, check_cancel, sub_callbacks
from ..tiling.errors import RasterInputError
from ..tiling.outputs import ClassInfo
from ..tiling.pixel_reader import PixelReader
from ..tiling.pixel_sampling import require_valid_pixel
from ..tiling.pixelwise import PixelOutput, PixelRunStats, map_pixels
from ..tiling.source import RasterSource
from .change_classes import ChangeTable, PairCounter, change_codes, change_table, match_classes
from .change_features import (
    ScoreHistogram,
    change_score,
    check_threshold,
    score_and_mask,
)
from .change_inputs import paired_rasters
from .change_report import write_tables
from .errors import ChangeInputError
from .evaluation import class_table
from .fitted import class_output
from .pixel_areas import pixel_areas

MAX_CHANGE_CODES = 65534
"""Changed from–to pairs a change raster holds (uint16 codes 1–65534; 65535 is nodata)."""
MASK_CLASSES = (ClassInfo(0, "no change", (235, 235, 235)), ClassInfo(1, "change", (215, 25, 28)))

Mapper = Callable[..., PixelRunStats]
"""Maps pixels into outputs: :func:`tiling.pixelwise.map_pixels` in this process, or its Dask drop-in (then pass a
``folder`` every worker can read, for the pair's VRTs)."""


@dataclass(frozen=True)
class ClassChange:
    """What :func:`class_change` found: the from–to table, whether the second raster was resampled, seconds."""

    table: ChangeTable
    resampled: bool
    seconds: float


@dataclass(frozen=True)
class FeatureChange:
    """What :func:`feature_change` found: the threshold used (Otsu's when ``automatic``), changed and compared
    pixels, whether the second raster was resampled, seconds."""

    threshold: float
    automatic: bool
    changed: int
    compared: int
    resampled: bool
    seconds: float


def scan_pixels(source: RasterSource, bands: Sequence[int], fn: Callable[..., None], callbacks: Callbacks,
                rows: bool = False) -> None:
    """Hand the valid pixels ``(n, bands)`` of every window to ``fn`` (a counting pass; nothing is written), with
    ``rows`` also the raster row of each ``(n,)``."""
    with PixelReader(source, bands) as reader:
        total, done = reader.window_count, 0
        for _, windows in reader.strips():
            for window in windows:
                check_cancel(callbacks)
                block = reader.read(window)
                if len(block.pixels) and rows:
                    fn(block.pixels, np.nonzero(block.valid)[0] + block.window.row_off)
                elif len(block.pixels):
                    fn(block.pixels)
                done += 1
                callbacks.progress(done / total)
                reader.window_done()
            reader.strip_done()


def _no_common_pixel(first: str, second: str) -> ChangeInputError:
    return ChangeInputError(f"No pixel is valid on both dates: where {first} has values, {second} is nodata or "
                            "missing. Choose two rasters that cover the same place with data.")


def _names(path: str) -> dict[int, str]:
    return {value: str(info["name"]) for value, info in class_table(path).items() if info["name"]}


def class_change(first: str, second: str, output: str, csv_path: str | None = None, html_path: str | None = None,
                 callbacks: Callbacks | None = None, mapper: Mapper = map_pixels,
                 folder: str | None = None) -> ClassChange:
    """From–to change of band 1 of two class rasters: change raster ``output`` and the area table (CSV, HTML)."""
    cb = callbacks or Callbacks()
    with paired_rasters(first, second, True, cb, folder) as pair:
        names_from = _names(first)
        match = match_classes(names_from, _names(second))
        if match.info:
            cb.info(match.info)
        if match.warning:
            cb.warning(match.warning)
        cb.stage("Counting from–to pairs")
        areas = pixel_areas(pair.first)
        counter = PairCounter(areas)
        scan_pixels(pair.source, pair.bands, lambda px, rows=None: counter.add(match.remap(px), rows),
                    sub_callbacks(cb, 0.0, 0.4), rows=counter.by_row)
        if not counter.counts:
            raise _no_common_pixel(first, second)
        table = change_table(counter.counts, names_from, match.names_to, areas, counter.square_metres())
        pairs = len(table.changed_codes)
        if pairs > MAX_CHANGE_CODES:
            raise ChangeInputError(
                f"{pairs} different from–to pairs occur, more than the {MAX_CHANGE_CODES} codes a change raster "
                "holds. Merge classes of both rasters into fewer (Reclassify by table) and run again.")
        out = class_output(output, table.classes(), "from–to change (0 = no change)")
        cb.stage("Writing the change raster")
        stats = mapper(pair.source, pair.bands, change_codes(table, int(out.nodata), match), [out], None,
                       sub_callbacks(cb, 0.4, 1.0))
        write_tables(table, csv_path, html_path, first, second)
        changed, total = table.totals()
        cb.info(f"{changed} of {total} compared pixels changed ({100.0 * changed / total:.2f} %), "
                f"{len(table.classes()) - 1} from–to pairs; {stats.seconds:.1f} s.")
        return ClassChange(table, pair.resampled, stats.seconds)


def _threshold(pair, bands: int, threshold: float | None, cb: Callbacks) -> tuple[float, bool]:
    """The given threshold, or Otsu's from a streamed histogram of the scores (a counting pass)."""
    if threshold is not None:
        try:  # the counting pass finds this on its way; without it, say it in the words of two dates
            require_valid_pixel(pair.source, pair.bands, callbacks=cb)
        except RasterInputError as exc:
            raise _no_common_pixel(pair.first.path, pair.second.path) from exc
        return threshold, False
    cb.stage("Histogram of the change score")
    histogram = ScoreHistogram()
    scan_pixels(pair.source, pair.bands, lambda px: histogram.add(change_score(px, bands)),
                sub_callbacks(cb, 0.0, 0.4))
    if histogram.total == 0:
        raise _no_common_pixel(pair.first.path, pair.second.path)
    otsu = histogram.otsu()
    if otsu is None:  # every score in one bin: nothing lies above its upper edge
        filled = int(np.flatnonzero(histogram.counts).max())
        top = histogram.edge(filled + 1)
        if filled == 0:  # identical dates
            cb.warning(f"Every change score is below {top:.2g}: the dates do not differ enough for an automatic "
                       "threshold, so no pixel is marked changed.")
        else:
            cb.warning(f"Every change score is about {histogram.edge(filled):.3g}: the automatic (Otsu) threshold "
                       "cannot split one value into changed and unchanged pixels, so no pixel is marked changed. "
                       "Give a threshold to decide whether this difference is a change.")
        return top, True
    return otsu, True


def feature_change(first: str, second: str, mask_path: str, score_path: str | None = None,
                   threshold: float | None = None, callbacks: Callbacks | None = None, mapper: Mapper = map_pixels,
                   folder: str | None = None) -> FeatureChange:
    """Change score (``score_path``: float32, NaN nodata) and change mask (``mask_path``: uint8 1 changed, 0 not,
    255 nodata) of two feature rasters; ``threshold`` None: Otsu's, logged."""
    cb = callbacks or Callbacks()
    if threshold is not None:
        check_threshold(threshold)
    with paired_rasters(first, second, False, cb, folder) as pair:
        bands = len(pair.first_bands)
        used, automatic = _threshold(pair, bands, threshold, cb)
        cb.info(f"Change threshold: {used:.4g} ({'Otsu, automatic' if automatic else 'given'}); a pixel is changed "
                "when its score 1 − cosine similarity is above it.")
        both = score_and_mask(bands, used)
        outputs = [replace(class_output(mask_path, MASK_CLASSES, "change mask (1 = change)"), count_values=True)]
        if score_path:
            outputs.insert(0, PixelOutput(score_path, 1, np.float32, float("nan"),
                                          ("change score (1 − cosine similarity)",)))
        cb.stage("Writing the change score and mask")
        stats = mapper(pair.source, pair.bands, both if score_path else _mask_only(both), outputs, None,
                       sub_callbacks(cb, 0.4 if automatic else 0.0, 1.0))
        counts = stats.value_counts[-1]  # the mask's, as written
        changed, compared = int(counts[1]), int(counts[0] + counts[1])
        share = 100.0 * changed / compared if compared else 0.0
        cb.info(f"{changed} of {compared} compared pixels changed ({share:.2f} %); {stats.seconds:.1f} s.")
        return FeatureChange(used, automatic, changed, compared, pair.resampled, stats.seconds)


def _mask_only(both: Callable[[np.ndarray], list[np.ndarray]]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The mask of a score-and-mask pixel function, for a run that writes no score (picklable for Dask)."""
    return lambda pixels: both(pixels)[1:]

