"""How a dead training job is reported, and the barrier slot check on a cluster master."""
import types

import pytest

from ulv_spark.config import TrainConf
from ulv_spark.train import launch

LOST_WORKER = (
    "An error occurred while calling o6059.collectToPython.\n: org.apache.spark.SparkException: Job aborted due "
    "to stage failure: Could not recover from a failed barrier ResultStage. Most recent failure reason: Stage "
    "failed because barrier task ResultTask(47, 0) finished unsuccessfully.\nExecutorLostFailure (executor 0 "
    "exited unrelated to the running tasks) Reason: worker lost: 127.0.0.1:33577 got disassociated\n\tat "
    "org.apache.spark.scheduler.DAGScheduler.$anonfun$abortStage$3(DAGScheduler.scala:2935)\n\tat scala.Option")


def test_failure_reason_keeps_the_spark_reason_and_drops_the_stack_trace():
    reason = launch.failure_reason(RuntimeError(LOST_WORKER))
    assert reason == ("Stage failed because barrier task ResultTask(47, 0) finished unsuccessfully. "
                      "ExecutorLostFailure (executor 0 exited unrelated to the running tasks) "
                      "Reason: worker lost: 127.0.0.1:33577 got disassociated")
    assert launch.failure_reason(ValueError("rank 1: bad batch")) == "rank 1: bad batch"
    assert launch.failure_reason(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_training_failed_says_where_to_resume_from():
    with_ckpt = launch.TrainingFailed("worker lost", "/shared/ckpt/run", "/shared/ckpt/run/epoch-0004.pt")
    assert str(with_ckpt) == ("training failed: worker lost; the last checkpoint is /shared/ckpt/run/epoch-0004.pt; "
                              "run the same command again to resume from it")
    assert "no checkpoint was written yet under /shared/ckpt/run" in str(launch.TrainingFailed("x", "/shared/ckpt/run", None))


def _session(master):
    return types.SimpleNamespace(sparkContext=types.SimpleNamespace(master=master))


def test_barrier_slot_check_on_a_cluster_waits_then_fails_clearly(monkeypatch):
    cfg = TrainConf(local_mode=False, num_processes=2)
    offered = iter([1, 1, 2])
    monkeypatch.setattr(launch, "cluster_slots", lambda spark: next(offered))
    monkeypatch.setattr(launch.time, "sleep", lambda s: None)
    launch.check_barrier_slots(_session("spark://h:7077"), cfg, wait_seconds=60)  # the third look finds 2

    monkeypatch.setattr(launch, "cluster_slots", lambda spark: 1)
    with pytest.raises(ValueError, match=r"needs 2 free task slots, but the executors on spark://h:7077 offer 1"):
        launch.check_barrier_slots(_session("spark://h:7077"), cfg, wait_seconds=0)

    monkeypatch.setattr(launch, "cluster_slots", lambda spark: None)  # Spark does not say: leave it to Spark
    launch.check_barrier_slots(_session("yarn"), cfg, wait_seconds=0)
    with pytest.raises(ValueError, match="local\\[1\\]"):
        launch.check_barrier_slots(_session("local[1]"), cfg)
    launch.check_barrier_slots(_session("local[1]"), TrainConf(local_mode=True, num_processes=2))
