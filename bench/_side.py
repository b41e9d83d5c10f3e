"""What a peer's own process shares (``_feast_side.py``, ``_mem0_side.py``), standard library
only: ``main`` runs ``modes[spec["mode"]]`` on the spec (``argv[1]``) and writes its JSON to
``argv[2]``; ``timed`` is ``_common.measure``'s loop (each call alone, warmup discarded, gc
frozen) and returns the raw samples, so the parent computes every percentile with one code.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def timed(
    fn: Callable[[Any], object],
    args: Sequence[Any],
    warmup: Sequence[Any] = (),
    *,
    budget_s: float | None = None,
    slice_size: int = 0,
) -> tuple[list[int], int]:
    """(per-call ns, wall ns). With ``budget_s``, stop after the ``slice_size`` calls during
    which the budget ran out."""
    for arg in warmup:
        fn(arg)
    clock, samples, wall = time.perf_counter_ns, [], 0
    step = slice_size or max(1, len(args))
    gc.collect()
    gc.freeze()
    try:
        began = time.monotonic()
        for lo in range(0, len(args), step):
            t = clock()
            for arg in args[lo : lo + step]:
                t0 = clock()
                fn(arg)
                samples.append(clock() - t0)
            wall += clock() - t
            if budget_s is not None and time.monotonic() - began > budget_s:
                break
    finally:
        gc.unfreeze()
    return samples, wall


def rss_kib() -> tuple[int, int]:
    """(current, peak) RSS of this process in KiB."""
    found = dict.fromkeys(("VmRSS", "VmHWM"), 0)
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def main(modes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], **about: str) -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    result = {**modes[spec.get("mode", "run")](spec), **about, "python": sys.version.split()[0]}
    Path(sys.argv[2] + ".tmp").write_text(json.dumps(result), encoding="utf-8")
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    return 0
