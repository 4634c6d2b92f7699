"""Run ids, logging and stage timing shared by every job."""
from __future__ import annotations

import datetime as dt
import logging
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str = "ulv_spark") -> logging.Logger:
    """A logger writing to stderr once per process (progress output of long jobs)."""
    root = logging.getLogger("ulv_spark")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name if name.startswith("ulv_spark") else f"ulv_spark.{name}")


def new_run_id(job: str) -> str:
    """`<job>-<UTC yyyymmddTHHMMSS>-<8 hex>`: sortable and unique per run."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{job}-{stamp}-{uuid.uuid4().hex[:8]}"


@contextmanager
def stage(name: str, log: logging.Logger | None = None) -> Iterator[dict]:
    """Log start/end/duration of a stage; the yielded dict collects facts (row counts...)."""
    log = log or get_logger()
    info: dict = {"stage": name}
    start = time.perf_counter()
    log.info("%s: start", name)
    try:
        yield info
    except BaseException:
        info["seconds"] = round(time.perf_counter() - start, 2)
        log.error("%s: failed after %.1fs", name, info["seconds"])
        raise
    info["seconds"] = round(time.perf_counter() - start, 2)
    facts = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("stage", "seconds"))
    log.info("%s: done in %.1fs%s", name, info["seconds"], f" ({facts})" if facts else "")
