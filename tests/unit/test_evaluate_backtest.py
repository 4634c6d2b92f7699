"""Backtest splits, metric collection and the HTML report, on pandas frames (no Spark)."""
import base64
import datetime as dt
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ulv_spark.evaluate import metrics as M
from ulv_spark.evaluate.backtest import (Split, evaluate_predictions, partition, rolling_splits, run_backtest,
                                         holdout_mask)
from ulv_spark.evaluate.baselines import BgNbdGammaGamma, RfmHeuristic, TabularGbm, TwoModelUplift
from ulv_spark.evaluate.methods import Oracle
from ulv_spark.evaluate.report import render_report

D = dt.date


def test_rolling_splits_dates():
    splits = rolling_splits(D(2025, 10, 1), horizon_days=90, origins=2, step_days=30, train_origins=2)
    assert [s.origin for s in splits] == [D(2025, 7, 3), D(2025, 6, 3)]
    assert splits[0].train_origins == (D(2025, 4, 4), D(2025, 3, 5))
    assert splits[0].name == "origin=2025-07-03/h=90"
    assert Split(D(2025, 7, 3), 90, test_share=0.5).name == "origin=2025-07-03/h=90/test=0.5"


def test_split_rejects_training_labels_that_overlap_the_evaluation_window():
    with pytest.raises(ValueError, match="run past the evaluation origin"):
        Split(D(2025, 7, 3), 90, train_origins=(D(2025, 5, 1),))


def test_holdout_mask_is_stable_and_has_the_requested_share():
    ids = [f"user{i}" for i in range(20000)]
    mask = holdout_mask(ids, 0.3, seed=7)
    assert mask.mean() == pytest.approx(0.3, abs=0.015)
    np.testing.assert_array_equal(mask, holdout_mask(ids, 0.3, seed=7))
    assert (mask != holdout_mask(ids, 0.3, seed=8)).any()
    assert holdout_mask(ids[:5], 1.0, seed=7).all()


def _examples_by_hand():
    rows = [  # user, origin, frequency, recency, T, monetary, label_value, label_churned
        ("a", D(2024, 1, 1), 1.0, 5.0, 10.0, 8.0, 3.0, 0),
        ("b", D(2024, 1, 1), 0.0, 0.0, 30.0, 0.0, 0.0, 1),
        ("a", D(2024, 4, 1), 2.0, 50.0, 101.0, 5.0, 12.0, 0),
        ("b", D(2024, 4, 1), 0.0, 0.0, 121.0, 0.0, 0.0, 1),
        ("c", D(2024, 4, 1), 0.0, 0.0, 1.0, 0.0, 4.0, 0),
        ("a", D(2024, 2, 1), 1.0, 5.0, 41.0, 8.0, 9.0, 0),  # labels end after 2024-04-01: never train
    ]
    return pd.DataFrame(rows, columns=["user_id", "origin_date", "frequency", "recency", "T", "monetary_value",
                                       "label_value", "label_churned"])


def test_partition_uses_past_origins_for_training_and_all_users_for_calibration():
    ex = _examples_by_hand()
    frames = partition(ex, Split(D(2024, 4, 1), 91, train_origins=(D(2024, 1, 1),)))
    assert sorted(frames.test["user_id"]) == ["a", "b", "c"]
    assert sorted(zip(frames.train["user_id"], frames.train["origin_date"])) == [
        ("a", D(2024, 1, 1)), ("b", D(2024, 1, 1))]
    assert list(frames.calibration.columns) == ["user_id", "frequency", "recency", "T", "monetary_value"]
    assert len(frames.calibration) == 3


def test_partition_with_a_test_share_trains_on_the_other_users_at_the_origin():
    ex = _examples_by_hand()
    split = Split(D(2024, 4, 1), 91, test_share=0.5, seed=1)
    frames = partition(ex, split)
    in_test = dict(zip(["a", "b", "c"], holdout_mask(["a", "b", "c"], 0.5, 1)))
    assert sorted(frames.test["user_id"]) == sorted(u for u, t in in_test.items() if t)
    assert sorted(frames.train["user_id"]) == sorted(u for u, t in in_test.items() if not t)
    assert len(frames.calibration) == 3  # BG/NBD sees every user's history, no labels


def test_evaluate_predictions_matches_the_metric_functions_by_hand():
    test = pd.DataFrame({"user_id": list("abcd"), "label_value": [10.0, 0.0, 5.0, 5.0],
                         "label_churned": [0, 1, 0, 1], "arm": ["t", "t", "c", "c"], "is_control": [False, False, True, True],
                         "label_converted": [1, 0, 1, 0], "label_response_value": [10.0, 0.0, 5.0, 0.0]})
    pred = pd.DataFrame({"user_id": list("abcd"), "expected_value": [4.0, 3.0, 2.0, 1.0],
                         "churn_probability": [0.1, 0.8, 0.4, 0.4], "uplift_conversion:t": [0.3, 0.2, 0.1, 0.0]})
    got = evaluate_predictions(test, pred, uplift_top_share=0.5, bins=2)
    assert got["value_gini"] == pytest.approx(1 / 3)
    assert got["value_decile_mape"] == pytest.approx((abs(7 - 10) / 10 + abs(3 - 10) / 10) / 2)
    assert got["value_total_ratio"] == pytest.approx(10 / 20)
    assert got["churn_auc"] == pytest.approx(M.roc_auc([0, 1, 0, 1], [0.1, 0.8, 0.4, 0.4]))
    assert got["qini_conversion[t]"] == pytest.approx(M.qini_coefficient([1, 0, 1, 0], [1, 1, 0, 0], [.3, .2, .1, 0]))
    assert got["qini_conversion"] == got["qini_conversion[t]"]
    assert np.isnan(M.uplift_at_k([1, 0, 1, 0], [1, 1, 0, 0], [.3, .2, .1, 0], k=0.5))  # top 2 all treated
    assert "uplift_at_k_conversion[t]" not in got  # undefined metrics are left out
    assert not any(k.startswith("qini_value") for k in got)


def simulate_examples(n_users=3000, seed=0):
    """BTYD-like users at three quarterly origins; a randomised coupon at the last origin."""
    rng = np.random.default_rng(seed)
    origins = [D(2024, 1, 1), D(2024, 4, 1), D(2024, 7, 1)]
    lam = rng.gamma(0.8, 1 / 40, n_users)            # purchases per day
    spend = rng.gamma(4.0, 10.0, n_users)           # mean spend per purchase
    alive = rng.random(n_users) < 0.7
    trait = rng.random(n_users)
    frames = []
    for k, origin in enumerate(origins):
        age = 200.0 + 91 * k
        freq = rng.poisson(lam * age * np.where(alive, 1.0, 0.5))
        purchases = rng.poisson(lam * 91) * alive
        f = pd.DataFrame({
            "user_id": [f"u{i:05d}" for i in range(n_users)], "origin_date": origin,
            "frequency": freq.astype(float), "recency": np.minimum(age, freq * 30.0) * (freq > 0),
            "T": np.full(n_users, age), "monetary_value": np.where(freq > 0, spend * rng.gamma(20, 1 / 20, n_users), 0.0),
            "trait": trait, "label_value": purchases * spend, "label_purchases": purchases,
            "label_churned": (purchases == 0).astype(int),
            "true_expected_spend": lam * 91 * spend * alive, "true_p_no_purchase": np.where(alive, np.exp(-lam * 91), 1.0),
        })
        if k == len(origins) - 1:
            arm = rng.choice(["control", "coupon"], n_users)
            effect = 0.25 * (trait > 0.5)
            conv = rng.random(n_users) < 0.1 + effect * (arm == "coupon")
            f = f.assign(campaign_id="c1", arm=arm, is_control=arm == "control", label_converted=conv.astype(float),
                         label_response_value=conv * spend, **{"true_uplift_conversion:coupon": effect})
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


class Broken:
    name, fits_on = "broken", "train"

    def fit(self, frame):
        raise ValueError("cannot fit on purpose")


@pytest.fixture(scope="module")
def backtest_result():
    ex = simulate_examples()
    split = Split(D(2024, 7, 1), 91, train_origins=(D(2024, 1, 1), D(2024, 4, 1)), test_share=0.5)
    methods = [BgNbdGammaGamma(horizon_days=91), TabularGbm(max_iter=40, threads=1), RfmHeuristic(),
               TwoModelUplift(max_iter=30, threads=1), Oracle(), Broken()]
    return run_backtest(ex, [split], methods, dataset="simulated", uplift_top_share=0.2)


def test_run_backtest_scores_every_method_on_the_same_test_users(backtest_result):
    res = backtest_result.splits[0]
    assert set(res.predictions) == {"bgnbd_gg", "gbm", "rfm_heuristic", "two_model_gbm", "oracle"}
    assert res.skipped == {"broken": "cannot fit on purpose"}
    for pred in res.predictions.values():
        assert list(pred["user_id"]) == list(res.test["user_id"])
    m = backtest_result.metrics
    assert list(m.columns) == ["dataset", "split", "method", "metric", "value"]
    assert set(m["split"]) == {"origin=2024-07-01/h=91/test=0.5"}
    wide = backtest_result.pivot()
    for method in ("bgnbd_gg", "gbm", "rfm_heuristic", "oracle"):
        for metric in ("value_gini", "value_decile_mape", "value_spearman", "churn_auc", "churn_pr_auc", "churn_ece"):
            assert np.isfinite(wide.loc[(res.split.name, metric), method]), (method, metric)
    assert wide.loc[(res.split.name, "qini_conversion[coupon]"), "two_model_gbm"] > 0
    # the oracle is the ceiling: truth correlation 1, shares of its own metrics reported for others
    assert wide.loc[(res.split.name, "value_truth_pearson"), "oracle"] == pytest.approx(1.0)
    assert wide.loc[(res.split.name, "uplift_conversion_truth_pearson[coupon]"), "oracle"] == pytest.approx(1.0)
    share = m[m["metric"] == "value_gini_share_of_oracle"].set_index("method")["value"]
    gini = m[m["metric"] == "value_gini"].set_index("method")["value"]
    assert share["gbm"] == pytest.approx(gini["gbm"] / gini["oracle"])
    assert "oracle" not in share.index
    assert "qini_conversion_share_of_oracle" in set(m.loc[m["method"] == "two_model_gbm", "metric"])


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.headers, self._in_th = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        self._in_th = tag == "th"

    def handle_data(self, data):
        if self._in_th:
            self.headers.append(data.strip())

    def handle_endtag(self, tag):
        self._in_th = False


def test_report_embeds_every_plot_and_names_every_method(backtest_result, tmp_path):
    html_text = render_report(backtest_result, title="test report", facts={"run_id": "r1"})
    page = _Page()
    page.feed(html_text)
    plots = {img["data-plot"] for img in page.imgs}
    assert plots == {"gain_lift", "decile_calibration", "churn_reliability", "qini_conversion_coupon",
                     "qini_value_coupon", "qini_value_long_coupon"}
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for method in ("bgnbd_gg", "gbm", "rfm_heuristic", "two_model_gbm", "oracle"):
        assert method in page.headers
    assert "cannot fit on purpose" in html_text  # skipped methods are explained


class NanValues:
    name, fits_on = "nan_values", "train"

    def fit(self, frame):
        return self

    def predict(self, frame):
        values = np.arange(len(frame), dtype=float)
        values[3] = np.nan
        return pd.DataFrame({"user_id": frame["user_id"], "expected_value": values, "churn_probability": 0.5})


def test_a_method_with_non_finite_predictions_is_skipped_not_scored_on_fewer_users():
    ex = simulate_examples(n_users=300)
    split = Split(D(2024, 7, 1), 91, train_origins=(D(2024, 4, 1),))
    res = run_backtest(ex, [split], [NanValues(), RfmHeuristic()], dataset="t")
    assert "non-finite predictions" in res.splits[0].skipped["nan_values"]
    assert set(res.metrics["method"]) == {"rfm_heuristic"}


def test_oracle_gives_users_without_truth_the_truth_of_an_inactive_user():
    frame = pd.DataFrame({"user_id": ["a", "b"], "true_expected_spend": [10.0, None],
                          "true_p_alive": [0.5, None], "true_expected_purchases": [1.0, None],
                          "true_uplift_conversion:coupon": [0.1, None]})
    oracle = Oracle()
    pred = oracle.predict(frame)
    assert oracle.missing_truth_ == 1
    np.testing.assert_allclose(pred["expected_value"], [10.0, 0.0])
    # a: 1 - .5 * (1 - exp(-1 / .5)); b: inactive -> churn 1
    np.testing.assert_allclose(pred["churn_probability"], [1 - 0.5 * (1 - np.exp(-2.0)), 1.0])
    np.testing.assert_allclose(pred["uplift_conversion:coupon"], [0.1, 0.0])
    with pytest.raises(ValueError, match="no truth"):
        oracle.predict(frame.assign(true_expected_spend=None))


class SilentFailure:
    name, fits_on = "silent", None

    def fit(self, frame):
        raise ValueError("\n")  # an exception whose message is blank, like lifetimes' ConvergenceError


def test_every_skip_names_its_cause_even_when_the_library_gives_none():
    # two calibration users: lifetimes' BG/NBD optimiser does not converge and says so after a newline
    rows = [("a", D(2024, 4, 1), 0.0, 0.0, 10.0, 0.0, 0.0, 1), ("b", D(2024, 4, 1), 1.0, 5.0, 10.0, 3.0, 2.0, 0)]
    ex = pd.DataFrame(rows, columns=["user_id", "origin_date", "frequency", "recency", "T", "monetary_value",
                                     "label_value", "label_churned"])
    split = Split(D(2024, 4, 1), 91)
    res = run_backtest(ex, [split], [BgNbdGammaGamma(horizon_days=91), SilentFailure()], dataset="t").splits[0]
    assert res.skipped["bgnbd_gg"] == ("bgnbd_gg: the BG/NBD fit did not converge on 2 users (raise "
                                       "evaluate.bgnbd_penalizer, e.g. 0.001)")
    assert res.skipped["silent"] == "ValueError (no message)"


def test_two_model_gbm_skips_quietly_when_there_are_no_campaigns(caplog):
    ex = simulate_examples(n_users=300).drop(columns=["campaign_id", "arm", "is_control", "label_converted",
                                                     "label_response_value", "true_uplift_conversion:coupon"])
    ex = ex.assign(campaign_id=None, arm=None, is_control=None, label_converted=np.nan, label_response_value=np.nan)
    split = Split(D(2024, 7, 1), 91, train_origins=(D(2024, 4, 1),))
    with caplog.at_level("INFO", logger="ulv_spark"):
        res = run_backtest(ex, [split], [TwoModelUplift(max_iter=10, threads=1), RfmHeuristic()], dataset="t")
    assert res.splits[0].skipped == {"two_model_gbm": "no campaigns: no test user has a campaign exposure in the "
                                                      "label window"}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert set(res.metrics["method"]) == {"rfm_heuristic"}
    # exposures among the test users but none in the training rows: also no campaigns to learn from
    trained = simulate_examples(n_users=300)
    res = run_backtest(trained, [Split(D(2024, 7, 1), 91, train_origins=(D(2024, 4, 1),))],
                       [TwoModelUplift(max_iter=10, threads=1)], dataset="t")
    assert res.splits[0].skipped == {"two_model_gbm": "no campaigns in the training rows"}


def test_without_any_purchase_in_the_label_window_value_and_churn_have_no_metrics_but_a_note(tmp_path):
    """A campaign export: observed outcomes only, so everyone 'churned' and PR-AUC would be 1.0."""
    ex = simulate_examples(n_users=400)
    ex = ex[ex["origin_date"] == ex["origin_date"].max()].assign(label_value=0.0, label_purchases=0, label_churned=1,
                                                                 frequency=0.0, recency=0.0, monetary_value=0.0)
    ex = ex.drop(columns=[c for c in ex.columns if c.startswith("true_")])
    split = Split(ex["origin_date"].max(), 91, test_share=0.5)
    methods = [BgNbdGammaGamma(horizon_days=91), TabularGbm(max_iter=10, threads=1), RfmHeuristic(),
               TwoModelUplift(max_iter=30, threads=1)]
    result = run_backtest(ex, [split], methods, dataset="campaign")
    res = result.splits[0]
    why = "value and churn have no labels on this split (no test user bought in the label window)"
    assert res.skipped == {"bgnbd_gg": why, "gbm": why, "rfm_heuristic": why}
    assert res.notes == [f"value and churn have no labels on this split: none of the {len(res.test)} test users "
                         "made a purchase in [2024-07-01, 2024-09-30), so no value or churn metric is reported "
                         "(the uplift metrics use the campaign's observed outcomes)"]
    metrics = set(result.metrics["metric"])
    assert not [m for m in metrics if m.startswith(("value_", "churn_"))]
    assert {"qini_conversion[coupon]", "qini_value[coupon]"} <= metrics
    html_text = render_report(result, title="campaign")
    assert "<p class='note split-note'>value and churn have no labels on this split: none of the" in html_text
