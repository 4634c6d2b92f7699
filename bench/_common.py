"""Helpers every benchmark shares: timing, the machine record, writing the results file."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def timed(fn):
    """(wall seconds, result) of ``fn()``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def machine() -> dict:
    """Cores, platform, Python and the load average at the start (the machines are shared)."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "load_avg_start": os.getloadavg()}


def write_results(results: dict, out) -> dict:
    """Write ``results`` as JSON to ``out`` (creating its folder), print it, return it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))
    return results
