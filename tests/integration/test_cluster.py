"""The nightly job on a real Spark standalone cluster (master + 2 workers, 1 core each), issue 9.

The cluster is started from the pip-installed PySpark by :mod:`tools.cluster` and stopped by
process id. Every night is submitted exactly as README documents it: ``spark-submit --master
spark://... --packages <delta> --py-files <wheel> jobs/nightly.py``, so the driver, the executors
and the two TorchDistributor ranks are separate processes. Then the fault drills: a worker killed
while the features run, and one killed while the model trains.

The test session's own local Spark only reads the Delta tables the cluster wrote.
"""
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ulv_spark import cli, lake
from tools import cluster as spark_cluster
from ulv_spark.config import load_config
from ulv_spark.train import checkpoints as ckpt

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
D = dt.date(2025, 10, 1)
OUTPUTS = ("user_value", "user_churn", "promo_uplift", "user_segments")
RUN_TIMEOUT = 1200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = str(tmp_path_factory.mktemp("cluster"))
    state = spark_cluster.start(workers=2, cores=1, memory="2g", state_dir=state_dir,
                                port=spark_cluster._free_port())
    yield state
    pids = spark_cluster.stop(state_dir)
    assert pids and not any(spark_cluster._alive(pid) for pid in pids)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The package as the wheel spark-submit ships with --py-files (README: `pip wheel --no-deps`)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(REPO)], check=True, cwd=out)
    return next(out.glob("ulv_spark-*.whl"))


@pytest.fixture(scope="module")
def night(cluster, wheel, tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("cluster_night")
    conf = root / "conf.yaml"
    conf.write_text(f"""extends: {REPO / 'conf' / 'standalone.yaml'}
spark: {{master: "{cluster.master_url}"}}
lakehouse: {{root: {root / 'lakehouse'}, schema: cluster_t}}
generate: {{users: 800, partitions: 2}}
train:
  epochs: 2
  pretrain_epochs: 1
  batch_size: 128
  encoder: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
""")
    # The raw input files come from the generator (in this test session's local Spark).
    assert cli.main(["generate", "--conf", str(conf), "--as-of", D.isoformat()]) == 0
    return SimpleNamespace(conf=conf, cfg=load_config(conf), root=root, cluster=cluster, wheel=wheel)


def _submit(night, name: str, *args: str) -> SimpleNamespace:
    """Start `spark-submit ... jobs/nightly.py --conf <conf> --as-of D <args>` (README's command)."""
    command = spark_cluster.submit_command(
        night.cluster.master_url, str(night.wheel), str(REPO / "jobs" / "nightly.py"),
        ["--conf", str(night.conf), "--as-of", D.isoformat(), *args])
    env = spark_cluster.submit_env()
    out, err = night.root / f"{name}.out", night.root / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=night.root)
    return SimpleNamespace(proc=proc, out=out, err=err, name=name)


def _finish(run) -> tuple[int, dict]:
    """Wait for the run; its exit code and the summary JSON it printed last."""
    try:
        code = run.proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        raise
    text = run.out.read_text()
    start = text.rfind("\n{\n")
    assert start >= 0, f"{run.name}: no summary printed (exit {code}); stderr tail:\n{run.err.read_text()[-3000:]}"
    return code, json.loads(text[start:])


def _wait_for(predicate, run, what: str, timeout: float = 600.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if run.proc.poll() is not None:
            pytest.fail(f"{run.name} ended (exit {run.proc.returncode}) before {what}")
        if time.time() > deadline:
            run.proc.kill()
            pytest.fail(f"{run.name}: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.2)


def _finish_with_worker_killed(night, run) -> tuple[int, dict]:
    """Kill worker 1 (and its executors) now, let the run end, then bring the worker back."""
    spark_cluster.kill_worker(night.cluster.state_dir, 1)
    try:
        return _finish(run)
    finally:
        spark_cluster.restart_worker(night.cluster.state_dir, 1)


def _snapshot(spark, cfg, names=OUTPUTS):
    """Tables as sorted rows without run_id (a new run id is all a re-run may change)."""
    return {name: sorted(tuple(r) for r in lake.read_table(spark, lake.table_ref(cfg.lakehouse, name))
                         .drop("run_id").collect())
            for name in names}


def _versions(spark, cfg):
    return {n: lake.current_version(spark, lake.table_ref(cfg.lakehouse, n)) for n in OUTPUTS}


def _users_seen_before(spark, cfg, date):
    """Customers of the generated raw files with an order or an event strictly before `date`."""
    from pyspark.sql import functions as F

    raw = Path(cfg.generate.output_dir)
    orders = spark.read.parquet(str(raw / "orders")).select(
        "customer_id", F.to_timestamp("ordered_at", "yyyy-MM-dd'T'HH:mm:ss").alias("ts"))
    events = spark.read.parquet(str(raw / "events")).select("customer_id", F.col("event_time").cast("timestamp")
                                                             .alias("ts"))
    before = orders.unionByName(events).filter(F.col("ts") < F.lit(date).cast("timestamp"))
    return before.select("customer_id").distinct().count()


def _stage(summary, name):
    return next(s for s in summary["stages"] if s["stage"] == name)


@pytest.fixture(scope="module")
def first_night(night):
    """(exit code, summary) of the first night submitted to the cluster; the later drills build on it."""
    return _finish(_submit(night, "night1"))


def test_spark_submit_runs_the_nightly_on_both_workers(night, first_night, spark):
    code, summary = first_night
    assert code == 0, summary
    assert [s["stage"] for s in summary["stages"]] == ["ingest", "embed", "features", "train", "score", "segment", "plan"]
    assert all(s["status"] == "ok" for s in summary["stages"])
    train = _stage(summary, "train")
    # barrier mode, one rank per 1-core worker: the two ranks ran on different workers
    assert train["trained"] is True and train["world_size"] == 2 and train["loader"] == "petastorm"
    assert all(g["passed"] for g in summary["gates"])

    cfg = night.cfg
    users = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_features"), as_of_date=D).count()
    assert users == _users_seen_before(spark, cfg, D)
    for name in ("user_value", "user_churn", "user_segments"):
        df = lake.read_table(spark, lake.table_ref(cfg.lakehouse, name), as_of_date=D)
        assert df.count() == users and df.select("user_id").distinct().count() == users, name
        assert {r[0] for r in df.select("model_version").distinct().collect()} == {train["model_version"]}
    uplift = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "promo_uplift"), as_of_date=D)
    arms = sorted(r[0] for r in uplift.select("arm").distinct().collect())
    assert arms == ["coupon_10", "free_shipping"] and uplift.count() == users * len(arms)

    # the application's executors ran on both workers (each keeps a work dir per application)
    apps = [{p.name for p in Path(night.cluster.state_dir, f"worker{i}").glob("app-*")} for i in (0, 1)]
    assert apps[0] & apps[1], apps


def test_a_worker_lost_while_features_run_changes_nothing_in_the_outputs(night, first_night, spark):
    tables = (*OUTPUTS, "user_features", "training_examples")
    before = _snapshot(spark, night.cfg, tables)
    run = _submit(night, "features_fault", "--only", "features")
    # killed while user_features is written (a minute of Spark jobs on both workers): by then both
    # executors are registered and running the stage's tasks
    _wait_for(lambda: "write user_features for" in run.out.read_text(), run, "the user_features write started")
    time.sleep(2)
    assert "== stage features: ok" not in run.out.read_text(), "features ended before the worker was killed"
    code, summary = _finish_with_worker_killed(night, run)
    assert code == 0, summary
    assert "Lost executor" in run.err.read_text()  # Spark saw the executor go and re-ran its tasks
    assert [s["stage"] for s in summary["stages"]] == ["features"]
    assert _snapshot(spark, night.cfg, tables) == before


def test_a_worker_lost_while_training_fails_cleanly_and_the_rerun_resumes(night, first_night, spark):
    cfg = night.cfg
    versions, before = _versions(spark, cfg), _snapshot(spark, cfg)
    models_before = sorted(p.name for p in Path(cfg.train.model_dir).iterdir())
    # long enough to be killed in the middle; no early stop
    longer = ("--retrain", "--set", "train.epochs=12", "--set", "train.patience=100")
    run = _submit(night, "train_fault", "--only", "train", *longer)
    checkpoints = Path(cfg.train.checkpoint_dir)

    def mid_training():  # an unfinished run whose newest checkpoint is epoch 3 or later
        for run_dir in checkpoints.glob("*"):
            files = ckpt.checkpoint_files(str(run_dir))  # epoch-NNNN.pt, oldest first
            if files and not (run_dir / ckpt.FINISHED_MARKER).exists() and Path(files[-1]).name >= "epoch-0003.pt":
                return True
        return False

    _wait_for(mid_training, run, "the third epoch's checkpoint")
    code, summary = _finish_with_worker_killed(night, run)
    assert code == 1, summary
    assert summary["status"] == "failed"
    error = _stage(summary, "train")["error"]
    assert "training failed" in error and "worker lost" in error, error
    assert "run the same command again to resume" in error and "\tat " not in error
    assert _versions(spark, cfg) == versions and _snapshot(spark, cfg) == before
    assert sorted(p.name for p in Path(cfg.train.model_dir).iterdir()) == models_before

    # The rerun of the failed stage picks up its checkpoint and writes the new model (the stages
    # after it run on the first night's cluster test; `--from train` is tested in test_nightly_stages).
    code, summary = _finish(_submit(night, "train_rerun", "--only", "train", *longer))
    assert code == 0, summary
    assert [s["stage"] for s in summary["stages"]] == ["train"]
    train = _stage(summary, "train")
    assert train["trained"] is True and train["resumed_from_epoch"] >= 3
    assert train["epochs_run"] == 13  # 1 pretraining + 12 fine-tuning epochs, counted from the start
    models_after = sorted(p.name for p in Path(cfg.train.model_dir).iterdir())
    assert set(models_after) - set(models_before) == {train["model_version"]}   # the directory is the version
    assert _versions(spark, cfg) == versions   # nothing scored yet
