"""Run ids, logging, stage timing and the stdout guard shared by every job."""
from __future__ import annotations

import datetime as dt
import logging
import os
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


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever the block writes to stdout to stderr (print the command's summary after it).

    Python prints (lifetimes / scipy on a fit that does not converge, TorchDistributor relaying
    its ranks' lines) follow ``sys.stdout``; native code and child processes (torch's launcher,
    a Spark JVM started inside the block and the Python workers it forks) write to file
    descriptor 1. Both are pointed at stderr until the block ends, so a command's stdout can
    carry its JSON summary alone.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_stdout, saved_fd = sys.stdout, os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        sys.stdout = saved_stdout
