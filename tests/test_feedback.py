"""What a user sees while Classify pixels runs on the real 10 m Sentinel-2 scene (1536 × 768 px, 32 tiles of 256 px)
at default settings on the CPU: the first log line within seconds, progress per tile with the time left, and a
cancel honoured within seconds. Runs ``processing.run`` in a worker thread, as the desktop does."""

from __future__ import annotations

import threading
import time

import pytest

FIRST_LINE_S = 2.0  # generous bounds: measured about 0.1 s and 1–2 s on a loaded 2-core machine
CANCEL_S = 3.0


class RecordingFeedback:
    """A QgsProcessingFeedback that records when each log line, progress value and progress text arrived."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Recording(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines: list[tuple[float, str]] = []
                self.progress: list[tuple[float, float]] = []
                self.texts: list[str] = []

            def setProgress(self, value):  # noqa: N802 (called from Python by the run's callbacks)
                self.progress.append((time.perf_counter(), value))
                super().setProgress(value)

            def pushInfo(self, info):  # noqa: N802 (QGIS API)
                self.lines.append((time.perf_counter(), info))
                super().pushInfo(info)

            def pushWarning(self, warning):  # noqa: N802 (QGIS API)
                self.lines.append((time.perf_counter(), warning))
                super().pushWarning(warning)

            def setProgressText(self, text):  # noqa: N802 (QGIS API)
                self.texts.append(text)
                super().setProgressText(text)

        return Recording()


def test_first_line_progress_per_tile_and_cancel(qgis_app, s2_10m, model_6b_l1c, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    feedback = RecordingFeedback()
    outcome: dict = {}
    params = {"INPUT": str(s2_10m), "MODEL": str(model_6b_l1c / "model.json"), "DEVICE": 1,
              "OUTPUT_CLASSES": str(tmp_path / "classes.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")}

    def run():
        try:
            outcome["result"] = processing.run("deepraster:classify_pixels", params, feedback=feedback)
        except QgsProcessingException as exc:
            outcome["error"] = str(exc)
        outcome["ended"] = time.perf_counter()

    start = time.perf_counter()
    worker = threading.Thread(target=run)
    worker.start()
    deadline = start + 240
    while time.perf_counter() < deadline and worker.is_alive():  # until two tiles are done
        if any(value > 0 for _, value in feedback.progress) and len({v for _, v in feedback.progress}) >= 3:
            break
        time.sleep(0.02)
    assert worker.is_alive(), f"the run ended before it could be cancelled: {outcome}"
    cancelled_at = time.perf_counter()
    feedback.cancel()
    worker.join(timeout=60)
    assert not worker.is_alive()

    first_line = feedback.lines[0][0] - start
    latency = outcome["ended"] - cancelled_at
    steps = sorted({round(v, 3) for _, v in feedback.progress if 0 < v < 100})
    print(f"\nfirst log line after {first_line:.2f} s ({feedback.lines[0][1]!r}); cancel honoured after "
          f"{latency:.2f} s; progress values before the cancel: {steps}; texts: {feedback.texts[-2:]}")
    assert feedback.lines[0][1].startswith("Classify pixels: reading s2_l1c_10m.tif")
    assert first_line < FIRST_LINE_S
    assert latency < CANCEL_S
    assert "result" not in outcome  # cancelled: no result, and nothing written
    assert not (tmp_path / "classes.tif").exists() and not (tmp_path / "p.tif").exists()
    assert steps and steps[0] <= 100 / 32 + 1e-6, "progress moves by one tile (1/32), not by a strip"
    assert any("left" in text for text in feedback.texts), feedback.texts


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s"])
