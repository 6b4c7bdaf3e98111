"""Inspecting a model package (folder, .drpk, Esri .emd/.dlpk): validation, metadata, checksum, dry run, report.

:func:`inspect_model` never raises for a bad package: every problem goes into the report (``status`` "invalid" or
"failed"), so the user sees all of them at once. :func:`report_html` renders the report as a self-contained page.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from ..tiling.checksums import sha256_of
from ..tiling.errors import DeepRasterError
from .spec import ModelPackage
from .weights import unchecked_weights_warning


def _package_summary(package: ModelPackage) -> dict[str, Any]:
    a = package.architecture
    n = package.normalization
    return {
        "name": package.name, "version": package.version, "description": package.description,
        "authors": list(package.authors), "license": package.license, "attribution": package.attribution,
        "task": package.task,
        "architecture": {"framework": a.framework, "arch": a.arch, "encoder": a.encoder,
                         "in_channels": a.in_channels, "out_channels": a.out_channels, "kwargs": dict(a.kwargs)},
        "input": {
            "bands": [{"name": b.name, "aliases": list(b.aliases), "wavelength_nm": b.wavelength_nm,
                       "default_band": b.default_band} for b in package.bands],
            "value_scale": package.value_scale, "value_offset": package.value_offset,
            "expected_range": list(package.expected_range) if package.expected_range else None,
            "normalization": {"type": n.kind, "shift": list(n.a), "divisor": list(n.b)},
            "resolution_m": dict(package.resolution_m),
        },
        "inference": {"tile_size": package.tile_size, "overlap": package.overlap,
                      "size_divisor": package.size_divisor, "output_stride": package.output_stride,
                      "activation": package.activation},
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in package.classes],
        "weights": {"file": package.weights_file.name, "format": package.weights_format,
                    "sha256": package.weights_sha256},
        "provenance": dict(package.provenance),
    }


def _checksum(package: ModelPackage) -> dict[str, Any]:
    if not package.weights_file.is_file():
        return {"status": "missing", "detail": f"{package.weights_file.name} does not exist"}
    actual = sha256_of(package.weights_file)
    if not package.weights_sha256:
        return {"status": "not recorded", "actual": actual}
    ok = actual == package.weights_sha256.lower()
    return {"status": "ok" if ok else "mismatch", "expected": package.weights_sha256, "actual": actual}


def _dry_run(package: ModelPackage, trusted: bool) -> dict[str, Any]:
    import torch

    from .loaders import load_model

    net = load_model(package, verify=False, trusted=trusted)
    own_size = package.task in ("object_detection", "image_classification")  # a tile or chip of the package's size
    size = package.tile_size if own_size else max(package.size_divisor * 2, 64)
    start = time.perf_counter()
    with torch.inference_mode():
        out = net(torch.randn(1, package.architecture.in_channels, size, size))
    seconds = time.perf_counter() - start
    if package.task == "object_detection":
        return _detection_dry_run(package, out, size, seconds)
    stride = package.output_stride
    expected = [1, package.architecture.out_channels, size // stride, size // stride]
    if package.task == "image_classification":
        expected = expected[:2]  # one score per class (models.classifiers)
    shape = list(out.shape)
    return {"status": "ok" if shape == expected else "wrong shape", "input_shape": [1, package.architecture.in_channels,
            size, size], "output_shape": shape, "expected_output_shape": expected,
            "parameters": int(sum(p.numel() for p in net.parameters())), "seconds": round(seconds, 3)}


def _detection_dry_run(package: ModelPackage, out, size: int, seconds: float) -> dict[str, Any]:
    """A detector's output on one random tile, checked against the detection contract (models.detectors)."""
    from .detectors import parse_detections

    found = parse_detections(out, 1, f"The detector of {package.name!r}")[0]
    return {"status": "ok", "input_shape": [1, package.architecture.in_channels, size, size],
            "output": f"{len(found)} boxes with scores and labels", "seconds": round(seconds, 3)}


def inspect_model(path: str | Path, trusted: bool = False, dry_run: bool = True) -> dict[str, Any]:
    """A report on the model at ``path``: ``status`` is "valid", "invalid" (description problems) or "failed"."""
    from .sources import open_model

    report: dict[str, Any] = {"source": str(path), "status": "valid", "problems": []}
    try:
        package = open_model(path, verify_checksum=False)
    except DeepRasterError as exc:
        report.update(status="invalid", problems=str(exc).splitlines())
        return report
    report["package"] = _package_summary(package)
    report["checksum"] = _checksum(package)
    unchecked = unchecked_weights_warning(package.name, package.weights_file, package.weights_sha256)
    if unchecked:
        report["warnings"] = [unchecked]
    if report["checksum"]["status"] in ("missing", "mismatch"):
        report["status"] = "failed"
        report["problems"].append(f"weights checksum: {report['checksum']['status']}")
        return report
    if dry_run:
        try:
            report["dry_run"] = _dry_run(package, trusted)
        except DeepRasterError as exc:
            report.update(status="failed", dry_run={"status": "failed", "detail": str(exc)})
            report["problems"].append(str(exc))
            return report
        if report["dry_run"]["status"] != "ok":
            report["status"] = "failed"
            report["problems"].append(f"dry run gave {report['dry_run']['output_shape']}, expected "
                                      f"{report['dry_run']['expected_output_shape']}")
    if report["status"] == "valid" and unchecked:
        report["summary"] = "valid, but weights not checksummed"
    return report


def status_text(report: dict[str, Any]) -> str:
    """The status in words: "valid", "valid, but weights not checksummed", "invalid" or "failed"."""
    return report.get("summary", report["status"])


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def report_html(report: dict[str, Any]) -> str:
    """The report as a self-contained HTML page (every value escaped)."""
    e = html.escape
    parts = [f"<h1>Model package: {e(report.get('package', {}).get('name', report['source']))}</h1>",
             f"<p class='{e(report['status'])}'>Status: <b>{e(status_text(report))}</b> — {e(report['source'])}</p>"]
    if report.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in report["warnings"]) + "</ul>")
    if report["problems"]:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in report["problems"]) + "</ul>")
    package = report.get("package")
    if package:
        a, i, inf = package["architecture"], package["input"], package["inference"]
        parts.append("<h2>Description</h2>" + _table([
            ("description", package["description"]), ("version", package["version"]),
            ("authors", ", ".join(package["authors"])), ("licence", package["license"]),
            ("attribution", package["attribution"]), ("task", package["task"]),
            ("architecture", f"{a['framework']} {a['arch']} {a['encoder']}".strip()),
            ("channels", f"{a['in_channels']} in, {a['out_channels']} out"),
            ("weights", f"{package['weights']['file']} ({package['weights']['format']})"),
            ("checksum", report.get("checksum", {}).get("status", "")),
        ]))
        parts.append("<h2>Expected input</h2>" + _table([
            ("bands", ", ".join(b["name"] + (f" ({', '.join(b['aliases'])})" if b["aliases"] else "")
                                for b in i["bands"])),
            ("value scale", f"raster × {i['value_scale']:g} + {i['value_offset']:g}"),
            ("expected range", i["expected_range"]), ("normalisation", i["normalization"]["type"]),
            ("resolution (m)", i["resolution_m"]), ("tile size", f"{inf['tile_size']} px"),
            ("overlap", f"{inf['overlap']} px"), ("activation", inf["activation"]),
        ]))
        if package["classes"]:
            rows = "".join(
                f"<tr><td><span class='swatch' style='background:{e(c['color'])}'></span></td>"
                f"<td>{c['value']}</td><td>{e(c['name'])}</td><td>{e(c['color'])}</td></tr>"
                for c in package["classes"])
            parts.append(f"<h2>Classes</h2><table><tr><th></th><th>value</th><th>name</th><th>colour</th></tr>"
                         f"{rows}</table>")
    if "dry_run" in report:
        parts.append("<h2>Dry run</h2>" + _table(list(report["dry_run"].items())))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
             ".swatch{display:inline-block;width:1.5em;height:1em;border:1px solid #333}"
             ".valid{color:#1a7f37}.invalid,.failed{color:#b42318}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model package report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
