"""Where ONNX Runtime keeps the graph it optimised for this CPU, so that later sessions skip the optimisation.

Making a CPU session optimises the exported graph (fusions, the NCHWc layout) every time: 0.16 s of the 0.23 s
it takes for the ukis-csmask U-Net, before the first tile can start. ONNX Runtime can save the optimised graph, with
its weights in a file of their own that later sessions map into memory: a session made from that folder takes
0.05 s in a new process and computes the same bits (tests/test_onnx_runtime.py; see :mod:`tiling.onnx_session`).
The saved graph is tied to the CPU's instruction set and to the ONNX Runtime version (ONNX Runtime warns so), so its
name carries both: a home folder shared by computers with different CPUs holds one folder per kind of CPU, and a
computer never loads another CPU's graph. Nothing is saved, and every session optimises as before, where the CPU's
instruction set cannot be read (outside Linux) or where the cache is not on a local filesystem (a mapped file that
another computer deletes from a network drive would crash the process).

The folders live in the ONNX cache beside the exports (``<export name>-<24 hex>.optimized``), bounded with them
(:mod:`models.cache`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import platform
import re
from pathlib import Path

from .cache import ONNX_ENTRY, mark_used, prune, remove_entry
from .local_filesystems import on_local_filesystem

CPUINFO = Path("/proc/cpuinfo")
ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "popcnt", "movbe", "vnni", "vaes", "vpclmul",
                "gfni", "aes", "pclmul", "lzcnt", "abm", "adx", "sha_ni")
"""Prefixes of the x86 flags that name instruction sets."""


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str | None:
    """What the optimised graph depends on: the ONNX Runtime version, the machine type and the CPU's model and
    instruction-set flags (Linux ``/proc/cpuinfo``); None where the flags cannot be read."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name not in ("model name", "flags", "features", "cpu implementer", "cpu part") or name in fields:
            continue
        if name == "flags":  # x86
            fields[name] = " ".join(sorted(instruction_sets(value.split())))
        elif name == "features":  # ARM: every feature names an instruction set
            fields[name] = " ".join(sorted(value.split()))
        else:
            fields[name] = value.strip()
    if not ("flags" in fields or "features" in fields):
        return None
    from ..tiling.onnx_session import import_onnxruntime

    return json.dumps([import_onnxruntime().__version__, platform.machine(), sorted(fields.items())])


def instruction_sets(flags: list[str]) -> list[str]:
    """The x86 ``flags`` of /proc/cpuinfo that name instruction sets (SSE…, AVX…, FMA, F16C, AMX…: what ONNX
    Runtime's kernels are chosen by), without those a kernel or microcode update adds (mitigations and the like)."""
    return [flag for flag in flags if flag.startswith(ISA_PREFIXES)]


def forget_optimized_graphs(export: Path, cache: Path) -> None:
    """Remove every graph optimised from an earlier file at ``export``'s path (called when an export is written
    there: a new file may get the old one's inode); also those an earlier version kept as single files."""
    pattern = re.compile(re.escape(export.stem) + r"-[0-9a-f]{24}\.(optimized|onnx)")
    with contextlib.suppress(OSError):
        for path in cache.iterdir():
            if pattern.fullmatch(path.name):
                remove_entry(path)


def optimized_graph_path(export: Path, cache: Path) -> Path | None:
    """The folder where the graph of ``export`` optimised for this CPU is kept in the ONNX cache folder ``cache`` (it
    may not exist yet: the first session saves it there); None where no CPU signature can be read or ``cache`` is not
    on a local filesystem. The name follows the export's path, size and inode, so an export made again (a new file),
    or one shipped in a package, gets its own. A folder there is marked as used; before a new one is saved, the cache
    is pruned to its bound."""
    signature = cpu_signature()
    if signature is None:
        return None
    try:
        stat = export.stat()
    except OSError:
        return None
    identity = [str(export.resolve()), stat.st_size, stat.st_ino]  # not the time: the cache renews it on every use
    key = hashlib.sha256(json.dumps([identity, signature]).encode()).hexdigest()[:24]
    path = cache / f"{export.stem}-{key}.optimized"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not on_local_filesystem(cache):  # also when another computer, which sees it as local, made the folder
            return None
        if path.is_dir():
            mark_used(path)
            return path
    except OSError:
        return None  # nowhere to keep it: every session optimises
    prune(cache, keep=export, entry_name=ONNX_ENTRY)
    return path
