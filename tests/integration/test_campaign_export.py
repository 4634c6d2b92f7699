"""A campaign test export and nothing else: ingest -> features -> backtest through the CLI.

conf/examples/campaign_test.yaml on a seeded export of 400 customers (arm, one exposure date,
observed converted / revenue, attributes; no orders at all). The uplift part must work from the
observed outcomes alone, and the evaluation must say that value and churn have no labels
instead of reporting metrics of a population that 'churned' to a man.
"""
import json
import random
from pathlib import Path

import pytest

from ulv_spark import cli, lake
from ulv_spark.config import load_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_USERS = 400


def write_export(path: Path, seed: int = 11) -> None:
    """Coupon vs holdout, randomised; the coupon converts young customers more (a real effect)."""
    rng = random.Random(seed)
    lines = ["customer_id,campaign,test_group,exposure_date,converted,revenue,age,tenure_months,region"]
    for i in range(N_USERS):
        arm = rng.choice(["holdout", "coupon_10"])
        age = rng.randint(18, 75)
        p = 0.1 + (0.35 if arm == "coupon_10" and age < 40 else 0.0)
        converted = rng.random() < p
        revenue = round(rng.uniform(10, 80), 2) if converted else 0
        lines.append(f"{5000 + i},spring,{arm},2025-03-03,{int(converted)},{revenue},{age},{rng.randint(1, 60)},"
                     f"{rng.choice(['north', 'south', 'east', 'west'])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cli(capsys, command: str, args: list[str], *extra: str) -> dict:
    capsys.readouterr()
    assert cli.main([command, *args, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_campaign_export_alone_gives_uplift_metrics_and_says_value_and_churn_have_no_labels(spark, tmp_path,
                                                                                            capsys):
    export = tmp_path / "spring_test.csv"
    write_export(export)
    root = tmp_path / "lakehouse"
    args = ["--conf", str(REPO / "conf" / "examples" / "campaign_test.yaml"),
            "--set", f"lakehouse.root={root}", "--set", f"lakehouse.shared_dir={root / '_shared'}",
            "--set", "lakehouse.schema=campaign_e2e", "--set", "spark.shuffle_partitions=2",
            "--set", f"sources.campaign_exposures.path={export}", "--set", f"sources.user_attributes.path={export}",
            # one OpenMP thread: on a busy 2-core machine spinning threads make the uplift GBM fits ~30x slower
            "--set", "evaluate.gbm_threads=1"]

    ingest = _cli(capsys, "ingest", args)["tables"]
    assert (ingest["campaign_exposures"]["inserted"], ingest["user_attributes"]["inserted"]) == (N_USERS, N_USERS)
    assert ingest["orders"]["source"] is None

    features = _cli(capsys, "features", args)
    assert features["origins"] == ["2025-03-03"]
    assert features["rows"]["training_examples"] == N_USERS   # every customer in the test, at the exposure day
    assert features["rows"]["user_features"] == N_USERS       # and scored after it
    cfg = load_config(args[1], [a for a in args[3::2]])
    examples = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "training_examples"))
    arms = {r["arm"]: r["count"] for r in examples.groupBy("arm").count().collect()}
    assert sum(arms.values()) == N_USERS and set(arms) == {"holdout", "coupon_10"}
    assert "attr_age" in examples.columns and "attr_region_north" in examples.columns
    assert not {"attr_converted", "attr_revenue"} & set(examples.columns)

    report = tmp_path / "report.html"
    evaluation = _cli(capsys, "evaluate", args, "--report", str(report))
    (split,) = evaluation["headline"] or evaluation["skipped"]
    assert split == "origin=2025-03-03/h=30/test=0.5"
    assert evaluation["notes"][split] == [
        f"value and churn have no labels on this split: none of the {evaluation_test_users(evaluation, spark, cfg)} "
        "test users made a purchase in [2025-03-03, 2025-04-02), so no value or churn metric is reported (the "
        "uplift metrics use the campaign's observed outcomes)"]
    skipped = evaluation["skipped"][split]
    no_labels = "value and churn have no labels on this split (no test user bought in the label window)"
    assert {m: skipped[m] for m in ("bgnbd_gg", "gbm", "rfm_heuristic")} == dict.fromkeys(
        ("bgnbd_gg", "gbm", "rfm_heuristic"), no_labels)
    assert skipped["oracle"] == "no truth tables (synthetic data only)"
    assert skipped["model"].startswith("no complete model under ")
    assert not {"two_model_gbm", "x_learner", "class_transformation"} & set(skipped) and all(skipped.values())
    metrics = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "evaluation_metrics")).collect()
    names = {r["metric"] for r in metrics}
    assert not [m for m in names if m.startswith(("value_", "churn_"))]
    # the uplift baselines, and the policies the off-policy evaluation compares (no model, so no random
    # policy at the model plan's budget)
    assert {r["method"] for r in metrics} == {"two_model_gbm", "x_learner", "class_transformation", "send_none",
                                              "send_all[coupon_10]"}
    assert evaluation["margins"] == {}  # no model: no margins to bootstrap
    qini = {r["metric"]: r["value"] for r in metrics}["qini_conversion[coupon_10]"]
    assert qini > 0  # the coupon's effect on young customers is found from the observed outcomes alone
    assert "value and churn have no labels on this split" in report.read_text(encoding="utf-8")


def evaluation_test_users(evaluation: dict, spark, cfg) -> int:
    """Test users of the split: half of the exposed customers by the seeded hash (the backtest's rule)."""
    from ulv_spark.evaluate.backtest import holdout_mask

    ids = [str(5000 + i) for i in range(N_USERS)]
    return int(holdout_mask(ids, cfg.evaluate.test_share, cfg.evaluate.seed).sum())
