"""Launching the ranks from the driver: TorchDistributor, GPU resolution, barrier slots, failure reasons."""
from __future__ import annotations

import os
import re
import time
from typing import Optional

from ulv_spark.runtime import get_logger
from ulv_spark.train.spec import TrainSpec

LOG_NAME = "ulv_spark.train"


class TrainingFailed(RuntimeError):
    """The distributed training job died (a lost worker, a crashed rank); checkpoints are kept."""

    def __init__(self, reason: str, checkpoint_dir: str, last_checkpoint: Optional[str]):
        self.reason, self.checkpoint_dir, self.last_checkpoint = reason, checkpoint_dir, last_checkpoint
        resume = (f"the last checkpoint is {last_checkpoint}; run the same command again to resume from it"
                  if last_checkpoint else f"no checkpoint was written yet under {checkpoint_dir}")
        super().__init__(f"training failed: {reason}; {resume}")


def failure_reason(exc: BaseException) -> str:
    """One line saying why a Spark/TorchDistributor job died, without the JVM stack trace."""
    text = str(exc)
    for marker in ("Most recent failure reason: ", "Job aborted due to stage failure: ", "SparkException: "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = text.split("\n\tat ", 1)[0]
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line[:400] or type(exc).__name__


def run_distributed(spec: TrainSpec, *, num_processes: int, local_mode: bool, use_gpu: bool) -> dict:
    """Run :func:`ulv_spark.train.loop.train_rank` on ``num_processes`` processes with TorchDistributor."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from ulv_spark.train.loop import train_rank

    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    return distributor.run(train_rank, spec)


def local_slots(master: str) -> Optional[int]:
    """Task slots of a ``local[N]`` master (``local`` = 1, ``local[*]`` = cores); None for a cluster master."""
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master or "")
    if master == "local":
        return 1
    if not match:
        return None
    return os.cpu_count() or 1 if match.group(1) == "*" else int(match.group(1))


def resolve_gpu(spark, train_cfg, log) -> bool:
    """use_gpu from conf, or False with a warning where no GPU can be had (clean CPU fallback)."""
    if not train_cfg.use_gpu:
        return False
    if train_cfg.local_mode:
        import torch

        if not torch.cuda.is_available():
            log.warning("train.use_gpu: no GPU on the driver; training on CPU with gloo")
            return False
        return True
    if not spark.conf.get("spark.task.resource.gpu.amount", None):
        log.warning("train.use_gpu: spark.task.resource.gpu.amount is not set, so tasks get no GPU; "
                    "training on CPU with gloo")
        return False
    return True


def check_barrier_slots(spark, train_cfg, wait_seconds: float = 60.0) -> None:
    """Barrier mode needs num_processes free task slots at once; fail early, not by hanging.

    On ``local[N]`` the slots are N. On a cluster they are what the registered executors offer
    now: wait up to ``wait_seconds`` for executors to (re)register, then fail with a clear
    message instead of letting Spark retry its slot check for minutes.
    """
    if train_cfg.local_mode:
        return
    needed = train_cfg.num_processes
    master = spark.sparkContext.master
    slots = local_slots(master)
    if slots is not None:
        if slots < needed:
            raise ValueError(f"train.local_mode=false with num_processes={needed} needs as many "
                             f"task slots, but the master is {master}")
        return
    deadline, warned = time.time() + wait_seconds, False
    while True:
        slots = cluster_slots(spark)
        if slots is None or slots >= needed:
            return
        if time.time() >= deadline:
            raise ValueError(f"train.local_mode=false with num_processes={needed} needs {needed} free task slots, "
                             f"but the executors on {master} offer {slots} (a worker lost or not registered?): "
                             "bring the workers back or lower train.num_processes")
        if not warned:
            get_logger(LOG_NAME).warning("barrier training needs %d task slots, the cluster offers %d: "
                                         "waiting up to %.0fs for executors", needed, slots, wait_seconds)
            warned = True
        time.sleep(2.0)


def cluster_slots(spark) -> Optional[int]:
    """Task slots the registered executors offer now, or None where Spark does not say."""
    try:
        sc = spark.sparkContext._jsc.sc()
        return int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # not exposed (e.g. a restricted Py4J gateway): let Spark's own check decide
        return None
