"""`evaluate` end to end on a simulated lakehouse, the Spark pieces of the pipeline, and CDNOW RFM."""
import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ulv_spark import lake
from ulv_spark.cli import main as cli_main
from ulv_spark.config import load_config
from ulv_spark.evaluate.segments import SEGMENTATIONS

pytestmark = pytest.mark.slow

D = dt.date(2025, 10, 1)       # run date
H = 60                         # horizon: evaluation origin E = D - H = 2025-08-02
E = D - dt.timedelta(days=H)
METHODS = {"model", "oracle", "bgnbd_gg", "gbm", "rfm_heuristic", "two_model_gbm", "x_learner", "class_transformation",
           "model_network"}   # train.tree_blend: churn (the default) adds the network-only ablation row
# policies that are no method (the plan's are the methods'), and the short-term-only twins of the plan
POLICIES = {"send_none", "send_all[coupon]", "random", "model[short_term]", "oracle[short_term]"}

CONF = """
spark: {{shuffle_partitions: 2, driver_memory: 2g}}
lakehouse: {{root: {root}/lakehouse, schema: {schema}, shared_dir: {root}/shared}}
run: {{horizon_days: {h}}}
features: {{sequence_length: 8, windows_days: [30, 90], training_origins: 1}}
train: {{model_dir: {root}/models}}
evaluate: {{report_dir: {root}/reports, model_dir: {root}/backtest_models, train_origins: 1, origin_step_days: 30,
            gbm_max_iter: 30, gbm_threads: 1}}
"""
ARMS = ["control", "coupon"]
WAVES = (dt.datetime(2025, 6, 20, 8), dt.datetime(2025, 8, 10, 8))  # one per label window (train, test)


def simulate_bronze(n: int = 400, seed: int = 0):
    """A small buy-till-you-die shop with a randomised coupon per wave, and its truth at E.

    Rates per day lambda ~ Gamma(.8, 1/25); customers die at an exponential time; a coupon
    doubles the rate for 30 days for users with trait > .5. Returns pandas frames in the
    bronze / truth contracts' columns.
    """
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2025, 1, 1)
    day = dt.timedelta(days=1)
    lam = rng.gamma(0.8, 1 / 25, n)
    spend = rng.gamma(4.0, 10.0, n)
    trait = rng.random(n)
    first = rng.uniform(0, 150, n)
    death = first + rng.exponential(250, n)
    end = (D - t0.date()).days
    arms = rng.integers(0, 2, (n, len(WAVES)))
    orders, exposures = [], []
    for i in range(n):
        times = [first[i]]
        t = first[i]
        while True:
            t += rng.exponential(1 / lam[i])
            if t >= min(death[i], end):
                break
            times.append(t)
        for w, wave in enumerate(WAVES):
            ws = (wave - t0) / day
            if first[i] < ws:
                exposures.append((f"u{i:04d}", f"wave{w}", ARMS[arms[i, w]], arms[i, w] == 0, wave, 30))
                if arms[i, w] == 1 and trait[i] > 0.5 and ws < death[i]:
                    extra = ws + np.cumsum(rng.exponential(1 / lam[i], 5))
                    times += [x for x in extra if x < min(ws + 30, death[i], end)]
        for k, x in enumerate(sorted(times)):
            ts = t0 + dt.timedelta(days=float(x))
            orders.append((f"u{i:04d}", f"o{i:04d}-{k}", ts, ts.date(), float(np.round(spend[i] * rng.gamma(10, 0.1), 2)),
                           1.0, 1, "books", 0.0, False))
    ws_e = (dt.datetime.combine(E, dt.time()) - t0) / day
    alive = death > ws_e
    acquired = first < ws_e
    ids = [f"u{i:04d}" for i in range(n)]
    truth_users = pd.DataFrame({"user_id": ids, "as_of_date": E, "horizon_days": H, "p_alive": alive.astype(float),
                                "expected_purchases": alive * lam * H, "expected_spend": alive * lam * H * spend,
                                "is_alive": alive})[acquired]
    lift = alive * (trait > 0.5) * (np.exp(-lam * 30) - np.exp(-2 * lam * 30))
    truth_uplift = pd.DataFrame({"user_id": ids, "as_of_date": E, "campaign_id": "wave1", "arm": "coupon",
                                 "true_uplift_conversion": lift, "true_uplift_value": lift * spend,
                                 "true_uplift_value_long": 1.5 * lift * spend, "response_window_days": 30})[acquired]
    orders = pd.DataFrame(orders, columns=["user_id", "order_id", "order_ts", "order_date", "amount", "quantity",
                                           "n_lines", "category", "discount", "is_return"])
    exposures = pd.DataFrame(exposures, columns=["user_id", "campaign_id", "arm", "is_control", "exposed_ts",
                                                 "response_window_days"])
    return orders, exposures.assign(observed_converted=None, observed_value=None), truth_users, truth_uplift


def write_bronze(spark, lakehouse_cfg, frames) -> None:
    from ulv_spark.catalog import CAMPAIGN_EXPOSURES, ORDERS, TRUTH_UPLIFT, TRUTH_USERS

    for frame, contract in zip(frames, (ORDERS, CAMPAIGN_EXPOSURES, TRUTH_USERS, TRUTH_UPLIFT)):
        if "run_id" in contract.column_names:
            frame = frame.assign(run_id="test")
        ddl = ", ".join(f"{c.name} {c.type}" for c in contract.columns)
        df = spark.createDataFrame(frame[contract.column_names], ddl)
        lake.append(spark, df, lake.table_ref(lakehouse_cfg, contract.name), contract)


def _save_tiny_model(cfg, trained_as_of: dt.date) -> str:
    """An untrained (seeded) model directory saved with the training team's own code."""
    import torch

    from ulv_spark.features import vocab_size, vocabulary_fingerprint
    from ulv_spark.config import EncoderConf
    from ulv_spark.train.artifacts import save_model
    from ulv_spark.train.model import build_model
    from ulv_spark.train.spec import ModelMeta, ModelSpec

    features = ["frequency", "recency", "T", "monetary_value"]
    arms = ARMS
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=vocab_size(cfg.features), seq_len=cfg.features.sequence_length,
                     n_features=len(features), n_arms=len(arms), tabular_hidden=8, head_hidden=8, long_term=True,
                     encoder=EncoderConf(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0))
    meta = ModelMeta(version="", feature_columns=features, feature_mean=[0.5, 3.0, 4.0, 2.0],
                     feature_std=[1.0] * 4, seq_len=cfg.features.sequence_length, vocab_size=vocab_size(cfg.features),
                     vocab_fingerprint=vocabulary_fingerprint(cfg.features), arms=arms,
                     arm_campaigns={a: "promo" for a in arms}, horizon_days=H, trained_as_of=trained_as_of.isoformat())
    return save_model(build_model(spec), meta, cfg.train.model_dir, metrics={}, conf={})


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.plots, self.headers, self._th = [], set(), False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.plots.append(attrs["data-plot"])
        self._th = tag == "th"

    def handle_data(self, data):
        if self._th:
            self.headers.add(data.strip())


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    """A simulated bronze lakehouse with truth, a model saved 'before' E, and one evaluate run."""
    root = tmp_path_factory.mktemp("evaluate_e2e")
    conf = root / "conf.yaml"
    conf.write_text(CONF.format(root=root, schema="eval_e2e", h=H), encoding="utf-8")
    cfg = load_config(conf)
    write_bronze(spark, cfg.lakehouse, simulate_bronze())
    _save_tiny_model(cfg, trained_as_of=E)
    _save_tiny_model(cfg, trained_as_of=D)  # newer, but trained after E: must not be picked
    return root, conf, cfg


@pytest.fixture(scope="module")
def evaluated(generated):
    root, conf, cfg = generated
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["evaluate", "--conf", str(conf), "--as-of", D.isoformat(), "--run-id", "eval-1"])
    assert code == 0
    return json.loads(out.getvalue())


def test_evaluate_scores_every_method_on_one_split_and_writes_the_metrics_table(spark, generated, evaluated):
    root, conf, cfg = generated
    split = f"origin={E}/h={H}"
    assert set(evaluated["headline"][split]) == METHODS, evaluated.get("skipped")
    assert evaluated["skipped"] == {}
    metrics = spark.table(evaluated["metrics_table"]).toPandas()
    # + segment quality (evaluate/segments.py) + the policies valued off-policy (evaluate/policy_backtest.py)
    assert set(metrics["method"]) == METHODS | set(SEGMENTATIONS) | POLICIES
    assert set(metrics["run_id"]) == {"eval-1"} and set(metrics["as_of_date"]) == {D}
    assert len(metrics) == evaluated["metrics_rows"]  # one append of this run's rows
    assert set(metrics["dataset"]) == {"lakehouse"} and set(metrics["split"]) == {split}
    wide = metrics.pivot_table(index="metric", columns="method", values="value")
    for method in ("model", "oracle", "bgnbd_gg", "gbm", "rfm_heuristic"):
        for metric in ("value_gini", "value_decile_mape", "value_spearman", "churn_auc", "churn_pr_auc", "churn_ece"):
            assert np.isfinite(wide.loc[metric, method]), (metric, method)
    for method in ("model", "oracle", "two_model_gbm", "x_learner", "class_transformation"):
        for metric in ("qini_conversion", "qini_value", "qini_value_long"):   # long: the horizon's spend
            assert np.isfinite(wide.loc[metric, method]), (metric, method)
    assert np.isfinite(wide.loc["uplift_value_long_truth_pearson[coupon]", "model"])
    # the oracle predicts the truth itself; the others are measured against it
    assert wide.loc["value_truth_pearson", "oracle"] == pytest.approx(1.0)
    assert wide.loc["value_gini", "oracle"] > wide.loc["value_gini", "rfm_heuristic"]
    assert np.isfinite(wide.loc["value_gini_share_of_oracle", "model"])


def test_evaluate_bootstraps_the_model_margins_into_the_table_the_summary_and_the_report(spark, evaluated):
    from ulv_spark.evaluate.bootstrap import parse_margin_metric

    split = f"origin={E}/h={H}"
    margins = evaluated["margins"][split]
    assert {"value_gini", "value_decile_mape", "churn_auc", "churn_ece", "qini_conversion", "qini_value"} <= set(margins)
    assert margins["qini_conversion"]["best_other"] in {"two_model_gbm", "x_learner", "class_transformation"}
    assert margins["value_gini"]["best_other"] in {"bgnbd_gg", "gbm", "rfm_heuristic"}
    for m in margins.values():
        assert m["lo"] <= m["hi"] and 0 <= m["p_not_better"] <= 1
    metrics = spark.table(evaluated["metrics_table"]).toPandas()
    parsed = metrics["metric"].map(parse_margin_metric)
    rows = metrics[parsed.notna()]
    assert set(rows["method"]) == {"model"}
    others = {p[1] for p in parsed.dropna()}
    assert others == METHODS - {"model", "oracle"}  # over every baseline, never the oracle
    gini = margins["value_gini"]
    value = {r.metric: r.value for r in rows.itertuples()}
    assert value[f"margin_vs_best[{gini['best_other']}]:value_gini"] == pytest.approx(gini["margin"], abs=1e-4)
    assert value[f"p_not_better_vs_{gini['best_other']}:value_gini"] == pytest.approx(gini["p_not_better"], abs=1e-3)
    page = _Page()
    page.feed(Path(evaluated["report"]).read_text(encoding="utf-8"))
    assert {"best other", "margin [95% CI]", "P(not better)"} <= page.headers


def test_evaluate_measures_learned_segments_against_rfm_and_the_grid_at_the_same_k(spark, evaluated):
    metrics = spark.table(evaluated["metrics_table"]).toPandas()
    seg = metrics[metrics["method"].isin(SEGMENTATIONS)].pivot_table(index="method", columns="metric", values="value")
    assert set(seg.index) == set(SEGMENTATIONS)
    assert ((seg["segment_value_variance_share"] >= 0) & (seg["segment_value_variance_share"] <= 1)).all()
    assert ((seg["segment_churn_auc"] >= 0.5 - 1e-9) & (seg["segment_churn_auc"] <= 1)).all()
    k = seg.loc["segments_learned", "segments"]
    assert 4 <= k <= 8 and seg.loc["segments_rfm_kmeans", "segments"] == k
    assert seg.loc["segments_rfm_quintile", "segments"] <= k and seg.loc["segments_grid", "segments"] <= 6
    page = _Page()
    page.feed(Path(evaluated["report"]).read_text(encoding="utf-8"))
    assert {"segmentation", "segment_value_variance_share", "segment_churn_auc"} <= page.headers


def test_evaluate_values_the_plan_policies_off_policy_against_send_all_and_send_none(spark, evaluated):
    from ulv_spark.evaluate.policy import parse_policy_metric

    metrics = spark.table(evaluated["metrics_table"]).toPandas()
    rows = metrics[metrics["metric"].map(parse_policy_metric).notna()]
    value = {(r.method, r.metric): r.value for r in rows.itertuples()}
    # no score.arm_costs in this conf: budgets do not bind, every plan is evaluated without one
    for method in ("model", "two_model_gbm", "oracle", "random"):
        for outcome in ("value", "value_long"):
            for est in ("ipw", "dr"):
                for stat in ("", "_lo", "_hi"):
                    assert np.isfinite(value[(method, f"policy_{est}_gain_{outcome}{stat}[budget=none]")])
                assert value[(method, f"policy_{est}_gain_{outcome}_lo[budget=none]")] <= value[
                    (method, f"policy_{est}_gain_{outcome}_hi[budget=none]")]
            assert np.isfinite(value[(method, f"policy_true_gain_{outcome}[budget=none]")])
    for est in ("ipw", "dr"):
        assert value[("send_none", f"policy_{est}_gain_value")] == 0.0
        assert np.isfinite(value[("send_all[coupon]", f"policy_{est}_value_long")])
    # the oracle's plan sends exactly the users the coupon helps (the coupon never hurts here): its true
    # gain equals send-all's and is at least every other plan's
    true = {m: v for (m, k), v in value.items() if k in ("policy_true_gain_value", "policy_true_gain_value[budget=none]")}
    assert true["oracle"] == pytest.approx(true["send_all[coupon]"]) and true["oracle"] > 0
    assert all(true["oracle"] >= v - 1e-12 for v in true.values())
    page = _Page()
    page.feed(Path(evaluated["report"]).read_text(encoding="utf-8"))
    assert "budget_curve" in page.plots and {"dr_gain value", "true_gain value_long"} <= page.headers


def test_evaluate_uses_the_newest_model_trained_before_the_origin(generated, evaluated):
    from ulv_spark.evaluate.methods import newest_model_before, trained_as_of

    root, conf, cfg = generated
    picked = newest_model_before(cfg.train.model_dir, E)
    assert trained_as_of(picked) == E
    assert newest_model_before(cfg.train.model_dir, E - dt.timedelta(days=1)) is None


def test_evaluate_report_renders_every_plot_and_method(generated, evaluated):
    page = _Page()
    page.feed(Path(evaluated["report"]).read_text(encoding="utf-8"))
    expected = {"gain_lift", "decile_calibration", "churn_reliability", "qini_conversion_coupon", "qini_value_coupon"}
    assert expected <= set(page.plots)
    assert METHODS <= page.headers


def test_evaluate_fails_cleanly_without_orders(spark, tmp_path, capsys):
    conf = tmp_path / "empty.yaml"
    conf.write_text(f"lakehouse: {{root: {tmp_path}/lh, schema: eval_empty}}\n", encoding="utf-8")
    assert cli_main(["evaluate", "--conf", str(conf), "--as-of", D.isoformat()]) == 1
    assert "ulv-spark ingest" in capsys.readouterr().err


def test_truth_at_origins_pivots_arms_exactly(spark):
    from ulv_spark.evaluate.pipeline import truth_at_origins

    users = spark.createDataFrame(
        [("a", E, H, 0.9, 2.0, 50.0), ("b", E, H, 0.5, 1.0, 20.0), ("a", D, H, 0.8, 1.5, 40.0),
         ("a", E, 30, 0.9, 1.0, 25.0)],
        "user_id string, as_of_date date, horizon_days int, p_alive double, expected_purchases double, "
        "expected_spend double")
    uplift = spark.createDataFrame(
        [("a", E, "c", "coupon", 0.10, 3.0), ("a", E, "c", "ship", 0.02, -1.0), ("b", E, "c", "coupon", 0.0, 0.5)],
        "user_id string, as_of_date date, campaign_id string, arm string, true_uplift_conversion double, "
        "true_uplift_value double")
    got = truth_at_origins(users, uplift, origins=[E], horizon_days=H).toPandas().set_index("user_id").sort_index()
    assert list(got.index) == ["a", "b"]
    assert got.loc["a", "true_expected_spend"] == 50.0 and got.loc["b", "true_p_alive"] == 0.5
    assert got.loc["a", "true_uplift_conversion:ship"] == 0.02 and got.loc["a", "true_uplift_value:coupon"] == 3.0
    assert np.isnan(got.loc["b", "true_uplift_conversion:ship"])


def test_cdnow_rfm_from_the_features_code_gives_lifetimes_bgnbd_figures(spark):
    """The pipeline's RFM (features team's user_rfm on CDNOW) through BgNbdGammaGamma = lifetimes direct."""
    from ulv_spark.evaluate.baselines import BgNbdGammaGamma
    from bench.bench_accuracy import (CDNOW_CUT, CDNOW_HORIZON, cdnow_orders, lifetimes_reference)
    from ulv_spark.features.inputs import prepare_orders
    from ulv_spark.features.rfm import user_rfm

    rfm = user_rfm(prepare_orders(cdnow_orders(spark)), as_of=CDNOW_CUT).toPandas()
    reference = lifetimes_reference(penalizer=0.0, gg_penalizer=0.0)
    assert len(rfm) == len(reference) == 23570
    pred = BgNbdGammaGamma(horizon_days=CDNOW_HORIZON).fit(rfm).predict(rfm)
    both = pred.merge(reference, on="user_id", how="inner", validate="one_to_one", suffixes=("", "_lt"))
    assert len(both) == 23570
    for col in ("expected_purchases", "p_alive", "expected_value"):
        np.testing.assert_allclose(both[col], both[f"{col}_lt"], rtol=1e-8)
    assert CDNOW_HORIZON == 273
