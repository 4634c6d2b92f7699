"""The nightly job end to end on generated data, as the scheduler runs it (issue: nightly job).

One lakehouse for the module: generate, then nights D, D again, D + 1 (the ``nights`` fixture, which
every test that reads scored nights depends on), and broken nights. Runs in-process through the
CLI entry point (the shared Spark session is reused).
"""
import contextlib
import datetime as dt
import io
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ulv_spark import cli, lake
from ulv_spark.config import load_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
D = dt.date(2025, 10, 1)
OUTPUTS = ("user_value", "user_churn", "promo_uplift", "user_segments", "promo_plan", "campaign_forecast")


@pytest.fixture(scope="module")
def night(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("nightly")
    conf = root / "conf.yaml"
    # Every path of the local conf lives under lakehouse.root, so moving the root is enough.
    conf.write_text(f"""extends: {REPO / 'conf' / 'local.yaml'}
lakehouse: {{root: {root / 'lakehouse'}, schema: nightly_t}}
generate: {{users: 1200, partitions: 2}}
train:
  epochs: 1
  pretrain_epochs: 1
  batch_size: 128
  encoder: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
""")
    assert cli.main(["generate", "--conf", str(conf), "--as-of", D.isoformat()]) == 0
    return conf


def _run(conf, capsys, *args):
    capsys.readouterr()
    code = cli.main(["nightly", "--conf", str(conf), *args])
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{"):])


def _run_json(conf, *args):
    """(exit code, summary) of an in-process nightly; stdout is the summary alone."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["nightly", "--conf", str(conf), *args])
    return code, json.loads(buffer.getvalue())


def _snapshot(spark, cfg):
    """Output tables as sorted rows without run_id (a new run id is the only thing a re-run may change)."""
    snap = {}
    for name in OUTPUTS:
        df = lake.read_table(spark, lake.table_ref(cfg.lakehouse, name)).drop("run_id")
        snap[name] = sorted(tuple(r) for r in df.collect())
    return snap


def _versions(spark, cfg):
    return {n: lake.current_version(spark, lake.table_ref(cfg.lakehouse, n)) for n in OUTPUTS}


@pytest.fixture(scope="module")
def nights(night, spark):
    """Nights D, D again and D + 1 on the module's lakehouse, with what the first test checks after each.

    Every test that needs scored nights depends on this fixture, so it runs them whichever test
    comes first (``-k`` included) instead of skipping.
    """
    cfg = load_config(night)
    schema = cfg.lakehouse.schema
    out = SimpleNamespace(cfg=cfg)
    out.first = _run_json(night, "--as-of", D.isoformat())
    out.users = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_features"), as_of_date=D).count()
    out.latest_counts = {name: spark.sql(f"SELECT count(*) FROM {schema}.latest_{name}").first()[0]
                         for name in ("user_value", "user_churn", "user_segments")}
    out.arms = sorted(r[0] for r in spark.sql(f"SELECT DISTINCT arm FROM {schema}.promo_uplift").collect())
    out.uplift_rows = spark.sql(f"SELECT count(*) FROM {schema}.promo_uplift WHERE as_of_date = DATE'{D}'").first()[0]
    out.deciles = tuple(spark.sql(f"SELECT min(value_decile), max(value_decile) FROM {schema}.latest_user_value")
                        .first())
    out.plan_rows = tuple(spark.sql(f"SELECT count(*), count(DISTINCT user_id) FROM {schema}.latest_promo_plan")
                          .first())
    out.segmented = tuple(spark.sql(
        f"SELECT count(learned_segment), count(DISTINCT learned_segment), count(learned_segment_name) "
        f"FROM {schema}.latest_user_segments").first())
    out.profiles = spark.sql(f"SELECT learned_segment, users FROM {schema}.latest_segment_profiles").collect()
    out.before_again = _snapshot(spark, cfg)
    out.again = _run_json(night, "--as-of", D.isoformat())
    out.after_again = _snapshot(spark, cfg)
    out.next_day = _run_json(night, "--as-of", (D + dt.timedelta(days=1)).isoformat())
    out.latest_after_next_day = spark.sql(f"SELECT count(*) FROM {schema}.latest_user_segments").first()[0]
    out.dates = [r[0] for r in spark.sql(f"SELECT DISTINCT as_of_date FROM {schema}.user_value ORDER BY 1").collect()]
    out.models = {r[0] for r in spark.sql(f"SELECT DISTINCT model_version FROM {schema}.user_value").collect()}
    return out


def _stage(summary: dict, name: str) -> dict:
    return next(s for s in summary["stages"] if s["stage"] == name)


def test_nightly_end_to_end_then_rerun_then_next_day(nights):
    code, first = nights.first
    assert code == 0, first
    assert [s["stage"] for s in first["stages"]] == ["ingest", "embed", "features", "train", "score", "segment", "plan"]
    assert all(s["status"] == "ok" and s["seconds"] >= 0 for s in first["stages"])
    assert _stage(first, "train")["trained"] is True
    # the model is an MLflow run + registered version; the first one becomes champion (no evaluate tonight)
    assert _stage(first, "train")["mlflow_model_uri"] == "models:/ulv_spark/1"
    assert first["champion"] == {"champion": "1", "moved": True, "reason": "first registered model"}
    assert {g["gate"] for g in first["gates"]} >= {"reject_share", "user_count_change", "null_feature_share", "score_psi"}

    users = nights.users
    assert nights.latest_counts == {"user_value": users, "user_churn": users, "user_segments": users}
    assert nights.arms == ["coupon_10", "free_shipping"]  # generate.campaign_arms less the control
    assert nights.uplift_rows == users * len(nights.arms)
    assert nights.deciles == (1, 10)
    plan = _stage(first, "plan")
    assert plan["plan"] == "default" and plan["tables"]["promo_plan"]["rows"] == plan["users"]
    assert nights.plan_rows == (plan["users"], plan["users"])  # at most one arm per user

    # generate.texts (local.yaml): the catalogue and the due reviews are embedded, a re-run embeds nothing
    embedded = _stage(first, "embed")["tables"]
    assert embedded["product_embeddings"]["rows_written"] == 8 * 500 and embedded["review_embeddings"]["rows_written"] > 0

    code, again = nights.again
    assert code == 0 and _stage(again, "train")["trained"] is False
    assert "champion" not in again  # nothing registered tonight: the alias is not touched
    assert {t: v["rows_written"] for t, v in _stage(again, "embed")["tables"].items()} == {
        "product_embeddings": 0, "review_embeddings": 0}
    assert nights.after_again == nights.before_again

    # learned segments: fitted with the new model, assigned on the re-run and the next night
    segment = _stage(first, "segment")
    assert segment["fitted"] is True and 4 <= segment["k"] <= 8 and segment["method"] == "kmeans"
    assert nights.segmented == (users, segment["k"], users)
    assert len(nights.profiles) == segment["k"] and sum(r["users"] for r in nights.profiles) == users
    assert _stage(again, "segment")["fitted"] is False

    code, next_day = nights.next_day
    assert code == 0, next_day
    assert _stage(next_day, "train")["trained"] is False
    assert _stage(next_day, "segment")["fitted"] is False
    assert nights.dates == [D, D + dt.timedelta(days=1)]
    assert len(nights.models) == 1


def test_broken_input_fails_the_night_and_leaves_outputs_untouched(night, nights, spark, capsys):
    cfg = nights.cfg
    before, versions = _snapshot(spark, cfg), _versions(spark, cfg)
    # every amount unparsable: the reject-share gate stops the night in ingest
    code, report = _run(night, capsys, "--as-of", (D + dt.timedelta(days=2)).isoformat(),
                        "--set", "sources.orders.columns.amount=customer_id")
    assert code == 1 and report["status"] == "failed"
    assert report["stages"][-1]["stage"] == "ingest" and report["stages"][-1]["status"] == "failed"
    assert _versions(spark, cfg) == versions and _snapshot(spark, cfg) == before


def test_score_shift_gate_stops_before_outputs_are_replaced(night, nights, spark, capsys):
    cfg = nights.cfg
    versions = _versions(spark, cfg)
    # the score stage alone on D + 1, whose features and outputs the fixture wrote: the gate must
    # keep that night's outputs as they are
    code, report = _run(night, capsys, "--as-of", (D + dt.timedelta(days=1)).isoformat(), "--only", "score",
                        "--set", "gates.max_score_psi=-1")
    assert code == 1 and [s["stage"] for s in report["stages"]] == ["score"]
    failed = [g for g in report["gates"] if not g["passed"]]
    assert [g["gate"] for g in failed] == ["score_psi"]
    assert _versions(spark, cfg) == versions


def test_notebook_runs_against_the_lakehouse(night, nights, spark):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "explore_output_tables.ipynb", as_version=4)
    os.environ["ULV_SPARK_CONF"] = str(night)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.pop("ULV_SPARK_CONF", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # segments, deciles (one figure), churn tiers, uplift per arm, the embeddings' projection coloured by
    # learned segment and the transition matrix (the latest night, D + 1, follows D)
    assert len(images) == 6


def test_demo_summary_lists_the_tables_and_answers_its_sql_example(night, nights, spark, capsys):
    from tools import demo

    cfg = nights.cfg
    capsys.readouterr()
    assert demo.summarize(str(night)) == 0
    out = capsys.readouterr().out
    users = spark.sql(f"SELECT count(*) FROM {cfg.lakehouse.schema}.latest_user_segments").first()[0]
    assert f"{cfg.lakehouse.schema}.user_segments" in out and "SELECT segment, count(*) AS users" in out
    printed = [line.split() for line in out.splitlines() if line.startswith("    ")]
    assert printed and sum(int(n) for _, n in printed) == users  # every user in exactly one segment
    learned = [line for line in out.splitlines() if line.startswith("  - ")]
    assert "learned segments:" in out and sum(int(line.split()[-2]) for line in learned) == users


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sql_server_serves_the_nights_segments_over_jdbc(night, nights, spark):
    """`sql-server start` on a free loopback port; beeline (from the pyspark jars) reads
    latest_user_segments through JDBC and gets the rows the nightly wrote; `stop` ends it."""
    import subprocess

    import pyspark

    cfg = nights.cfg
    port = _free_loopback_port()
    args = ["--conf", str(night), "--set", f"sql_server.port={port}", "--set", "sql_server.refresh_seconds=0",
            "--set", "spark.master=local[1]"]
    code, started = _run_sql_server("start", args)
    try:
        assert code == 0, started
        assert started["status"] == "running" and started["jdbc_url"] == f"jdbc:hive2://127.0.0.1:{port}/nightly_t"
        assert _run_sql_server("status", args)[1]["status"] == "running"
        jars = Path(pyspark.__file__).parent / "jars"
        query = "SELECT user_id, segment, value_band FROM latest_user_segments ORDER BY user_id"
        done = subprocess.run(["java", "-cp", f"{jars}/*", "org.apache.hive.beeline.BeeLine", "-u", started["jdbc_url"],
                               "-n", "test", "--silent=true", "--showHeader=false", "--outputformat=csv2", "-e", query],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        # beeline -e echoes its prompt ("0: jdbc:hive2://host:port/db> ") before the first row
        rows = [re.sub(r"^\d+: jdbc:hive2://\S+> ?", "", line) for line in done.stdout.splitlines()]
        served = [tuple(line.split(",")) for line in rows if line.strip()]
        expected = [tuple(r) for r in spark.sql(f"SELECT user_id, segment, value_band FROM "
                                                f"{cfg.lakehouse.schema}.latest_user_segments ORDER BY user_id").collect()]
        # the fixture's last night is D + 1, so the latest view holds that night's users
        assert served == expected and len(served) == nights.latest_after_next_day
    finally:
        code, stopped = _run_sql_server("stop", args)
    assert code == 0 and stopped["status"] == "stopped" and stopped["was"] == "running"
    after = _run_sql_server("status", args)[1]
    assert after["status"] == "stopped" and "pid" not in after
    assert not (Path(cfg.lakehouse.shared_dir) / "sql-server.json").exists()


def _run_sql_server(action, args):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["sql-server", action, *args])
    return code, json.loads(buffer.getvalue())
