"""Paired bootstrap of the model's margins: exact values on hand-made resamples, the weighted
metrics against evaluate.metrics on the resampled arrays, and the backtest's rows and report."""
import datetime as dt
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from ulv_spark.evaluate import bootstrap as B
from ulv_spark.evaluate.backtest import Split, evaluate_predictions, resampled_metrics, run_backtest
from ulv_spark.evaluate.baselines import RfmHeuristic, TabularGbm, TwoModelUplift
from ulv_spark.evaluate.report import render_report


def _margins(test, preds, index, **kwargs):
    full = {m: evaluate_predictions(test, p, **kwargs) for m, p in preds.items()}
    return B.paired_margins(full, lambda m, w: resampled_metrics(test, preds[m], w, **kwargs), len(test),
                            index=np.asarray(index))


def _random_case(n=240, seed=1):
    """Test rows with ties everywhere (rounded values and scores), two arms and unexposed users."""
    rng = np.random.default_rng(seed)
    test = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)],
                         "label_value": np.round(rng.gamma(0.5, 20, n) * (rng.random(n) < 0.5)),
                         "label_churned": (rng.random(n) < 0.5).astype(int),
                         "arm": rng.choice(["control", "a", "b", None], n),
                         "label_converted": rng.integers(0, 2, n).astype(float),
                         "label_response_value": np.round(rng.gamma(1, 5, n))})
    test["is_control"] = test["arm"] == "control"

    def pred(seed):
        r = np.random.default_rng(seed)
        return pd.DataFrame({"user_id": test["user_id"], "expected_value": np.round(r.gamma(1, 5, n)),
                             "churn_probability": np.round(r.random(n), 1),
                             "uplift_conversion:a": np.round(r.normal(0, 1, n)),
                             "uplift_value:a": r.normal(0, 1, n), "uplift_conversion:b": np.round(r.normal(0, 1, n), 1),
                             "uplift_value:b": np.round(r.normal(0, 1, n))})
    return test, pred


def test_resample_counts_count_each_draw():
    counts = B.resample_counts(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        B.resample_counts(np.array([[0, 3, 1]]), 3)


def test_weighted_metrics_equal_the_metric_functions_on_the_resampled_rows():
    test, pred = _random_case()
    p = pred(2)
    n = len(test)
    kwargs = dict(uplift_top_share=0.3, bins=10)
    whole = resampled_metrics(test, p, np.ones((1, n)), **kwargs)
    reference = evaluate_predictions(test, p, **kwargs)
    assert set(reference) == {k for k, v in whole.items() if np.isfinite(v[0])}
    for metric, value in reference.items():
        assert whole[metric][0] == pytest.approx(value, rel=1e-10, abs=1e-12), metric
    index = np.random.default_rng(3).integers(0, n, (4, n))
    got = resampled_metrics(test, p, B.resample_counts(index, n), **kwargs)
    for b in range(len(index)):
        rows = np.sort(index[b])
        ref = evaluate_predictions(test.iloc[rows].reset_index(drop=True), p.iloc[rows].reset_index(drop=True), **kwargs)
        assert set(ref) == {k for k, v in got.items() if np.isfinite(v[b])}, b
        for metric, value in ref.items():
            assert got[metric][b] == pytest.approx(value, rel=1e-10, abs=1e-12), (b, metric)


def test_identical_predictions_have_margin_zero_an_interval_of_zero_and_are_never_better():
    test, pred = _random_case()
    index = np.random.default_rng(0).integers(0, len(test), (25, len(test)))
    margins = _margins(test, {"model": pred(5), "twin": pred(5)}, index, uplift_top_share=0.3)
    assert {m.metric for m in margins} >= {"value_gini", "value_spearman", "value_decile_mape", "value_total_ratio",
                                           "churn_auc", "churn_ece", "qini_conversion[a]", "qini_value",
                                           "uplift_at_k_conversion"}
    for m in margins:
        assert (m.margin, m.lo, m.hi, m.p_not_better) == (0.0, 0.0, 0.0, 1.0), m
        assert m.other == "twin"
    assert len([m for m in margins if m.best]) == len(margins) / 2  # the only other method is the best one


def test_margins_by_hand_on_four_users():
    # churn AUC: the model ranks both churners first (AUC 1); the other ranks one churner top and
    # one bottom (AUC .5). Resamples: all users (margin .5); users a, b twice (both 1: margin 0);
    # users c, d twice (model 1, other 0: margin 1); a once and b three times (margin 0).
    test = pd.DataFrame({"user_id": list("abcd"), "label_churned": [1, 0, 1, 0]})
    model = pd.DataFrame({"user_id": list("abcd"), "churn_probability": [0.9, 0.1, 0.8, 0.2]})
    other = pd.DataFrame({"user_id": list("abcd"), "churn_probability": [0.9, 0.8, 0.1, 0.2]})
    index = [[0, 1, 2, 3], [0, 0, 1, 1], [2, 2, 3, 3], [0, 1, 1, 1]]
    margins = {(m.metric, m.best): m for m in _margins(test, {"model": model, "other": other}, index)}
    auc = margins[("churn_auc", False)]
    assert (auc.model_value, auc.other_value, auc.margin) == (1.0, 0.5, 0.5)
    # percentiles of the sorted margins [0, 0, .5, 1]: 2.5 % at rank .075 -> 0; 97.5 % at 2.925 -> .9625
    assert (auc.lo, auc.hi, auc.p_not_better, auc.resamples) == (0.0, pytest.approx(0.9625), 0.5, 4)
    assert margins[("churn_auc", True)].rows() == [("margin_vs_best[other]:churn_auc", 0.5),
                                                   ("margin_lo_vs_best[other]:churn_auc", 0.0),
                                                   ("margin_hi_vs_best[other]:churn_auc", pytest.approx(0.9625)),
                                                   ("p_not_better_vs_best[other]:churn_auc", 0.5)]
    # ECE is lower-is-better: the margin is the other's ECE minus the model's
    ece = margins[("churn_ece", False)]
    assert ece.margin == pytest.approx(ece.other_value - ece.model_value)


def test_the_best_other_method_is_chosen_per_metric_on_the_full_test_set():
    assert B.best_other("value_gini", {"gbm": 0.7, "rfm": 0.6}) == "gbm"
    assert B.best_other("value_decile_mape", {"gbm": 0.2, "rfm": 0.1}) == "rfm"
    assert B.best_other("value_total_ratio", {"gbm": 1.15, "rfm": 0.9}) == "rfm"
    assert B.goodness("value_total_ratio", 1.1) == pytest.approx(-0.1)
    assert B.best_other("churn_auc", {}) is None


def test_margin_metric_names_round_trip():
    for stat in B.STAT_PREFIX:
        for best in (False, True):
            name = B.margin_metric("qini_conversion[coupon_10]", "two_model_gbm", stat, best=best)
            assert B.parse_margin_metric(name) == (stat, "two_model_gbm", "qini_conversion[coupon_10]", best)
    assert B.margin_metric("value_gini", "gbm") == "margin_vs_gbm:value_gini"
    assert B.margin_metric("value_gini", "gbm", "lo", best=True) == "margin_lo_vs_best[gbm]:value_gini"
    assert B.parse_margin_metric("value_gini") is None and B.parse_margin_metric("qini_value[a:b]") is None


def test_the_seeded_bootstrap_is_deterministic_and_blocks_cover_every_resample():
    blocks = list(B.resample_index(10, 7, seed=4))
    assert sum(len(b) for b in blocks) == 7 and all(b.shape[1] == 10 for b in blocks)
    again = np.vstack(list(B.resample_index(10, 7, seed=4)))
    np.testing.assert_array_equal(np.vstack(blocks), again)
    assert (np.vstack(list(B.resample_index(10, 7, seed=5))) != again).any()
    assert B.block_size(1_000_000, 200) == 2 and B.block_size(100, 200) == 200


# ---------------------------------------------------------------------------- in the backtest
class GbmAsModel:
    """A stand-in for the model: the gbm and two-model baselines' own predictions under the name model."""

    name, fits_on = "model", "train"

    def fit(self, frame):
        self.value_ = TabularGbm(max_iter=30, threads=1).fit(frame)
        self.uplift_ = TwoModelUplift(max_iter=20, threads=1).fit(frame)
        return self

    def predict(self, frame):
        return self.value_.predict(frame).merge(self.uplift_.predict(frame), on="user_id", validate="one_to_one")


@pytest.fixture(scope="module")
def with_margins():
    from tests.unit.test_evaluate_backtest import simulate_examples

    ex = simulate_examples(n_users=1200, seed=2)
    split = Split(dt.date(2024, 7, 1), 91, train_origins=(dt.date(2024, 4, 1),), test_share=0.5)
    methods = [GbmAsModel(), TabularGbm(max_iter=30, threads=1), RfmHeuristic(), TwoModelUplift(max_iter=20, threads=1)]
    return run_backtest(ex, [split], methods, dataset="t", uplift_top_share=0.3, bootstrap_resamples=40,
                        bootstrap_seed=3)


def test_backtest_writes_margin_rows_of_the_model_over_every_method(with_margins):
    res = with_margins.splits[0]
    m = with_margins.metrics
    rows = m[m["metric"].map(B.is_margin_metric)]
    assert set(rows["method"]) == {"model"} and len(rows) == 4 * len(res.margins)
    by = {(x.metric, x.other, x.best): x for x in res.margins}
    # the model's value predictions are gbm's and its uplift two_model_gbm's: margin 0, interval [0, 0]
    for metric in ("value_gini", "value_decile_mape", "churn_auc", "churn_ece"):
        assert (by[(metric, "gbm", False)].lo, by[(metric, "gbm", False)].hi) == (0.0, 0.0)
    for metric in ("qini_conversion", "qini_conversion[coupon]", "uplift_at_k_value"):
        assert by[(metric, "two_model_gbm", True)].margin == 0.0
        assert by[(metric, "two_model_gbm", True)].p_not_better == 1.0
    # over the RFM heuristic the margins are real: the point margin is the table's difference
    wide = m.pivot_table(index="metric", columns="method", values="value")
    rfm = by[("value_gini", "rfm_heuristic", False)]
    assert rfm.margin == pytest.approx(wide.loc["value_gini", "model"] - wide.loc["value_gini", "rfm_heuristic"])
    assert rfm.lo < rfm.margin < rfm.hi and rfm.resamples == 40
    assert wide.loc["margin_lo_vs_rfm_heuristic:value_gini", "model"] == rfm.lo
    assert wide.loc["margin_vs_best[gbm]:value_gini", "model"] == 0.0
    again = run_backtest(*_rerun_args(), dataset="t", uplift_top_share=0.3, bootstrap_resamples=40, bootstrap_seed=3)
    pd.testing.assert_frame_equal(again.metrics, m)  # same seed, same intervals


def _rerun_args():
    from tests.unit.test_evaluate_backtest import simulate_examples

    split = Split(dt.date(2024, 7, 1), 91, train_origins=(dt.date(2024, 4, 1),), test_share=0.5)
    return (simulate_examples(n_users=1200, seed=2), [split],
            [GbmAsModel(), TabularGbm(max_iter=30, threads=1), RfmHeuristic(), TwoModelUplift(max_iter=20, threads=1)])


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self._cls = {}, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._cls = dict(attrs).get("class")
            self.tables.setdefault(self._cls, [])

    def handle_data(self, data):
        if self._cls and data.strip():
            self.tables[self._cls].append(data.strip())


def test_report_shows_the_margins_table_and_keeps_margin_rows_out_of_the_metrics_table(with_margins):
    page = _Tables()
    text = render_report(with_margins)
    page.feed(text)
    margins = page.tables["margins"]
    assert margins[:5] == ["metric", "model", "best other", "margin [95% CI]", "P(not better)"]
    assert "value_gini" in margins and "gbm (%.4g)" % with_margins.pivot().loc[
        (with_margins.splits[0].split.name, "value_gini"), "gbm"] in margins
    assert "+0 [+0, +0]" in margins and "1.000" in margins
    assert "rfm_heuristic" in page.tables["margins-each"]
    assert not [c for c in page.tables["metrics"] if B.is_margin_metric(c)]
    assert "Margins (paired bootstrap" in text and "P(not better)" in text and "40 paired bootstrap" in text


def test_no_margins_without_a_model_or_with_the_bootstrap_off():
    from tests.unit.test_evaluate_backtest import simulate_examples

    ex = simulate_examples(n_users=300)
    split = Split(dt.date(2024, 7, 1), 91, train_origins=(dt.date(2024, 4, 1),))
    res = run_backtest(ex, [split], [RfmHeuristic(), TabularGbm(max_iter=10, threads=1)], dataset="t",
                       bootstrap_resamples=20)
    assert res.splits[0].margins == [] and not res.metrics["metric"].map(B.is_margin_metric).any()
    res = run_backtest(ex, [split], [GbmAsModel(), RfmHeuristic()], dataset="t", bootstrap_resamples=0)
    assert res.splits[0].margins == [] and not res.metrics["metric"].map(B.is_margin_metric).any()


def test_an_ablation_of_the_model_gets_margins_but_is_never_the_best_other_method():
    test, pred = _random_case()
    index = np.random.default_rng(0).integers(0, len(test), (10, len(test)))
    # model_network = the model itself (a blend whose trees earned nothing): better than "weak" on nothing
    margins = _margins(test, {"model": pred(5), "model_network": pred(5), "weak": pred(8)}, index, uplift_top_share=0.3)
    assert {m.other for m in margins if not m.best} == {"model_network", "weak"}
    assert {m.other for m in margins if m.best} == {"weak"}        # never the ablation, even where it ties the model
    assert all(m.margin == 0.0 for m in margins if m.other == "model_network")


def test_build_methods_adds_the_network_only_ablation_when_a_tree_blend_is_on():
    from ulv_spark.config import EvaluateConf
    from ulv_spark.evaluate.methods import NetworkOnlyMethod
    from ulv_spark.evaluate.pipeline import build_methods

    ev = EvaluateConf(methods=["model", "gbm"])
    plain, _ = build_methods(ev, horizon_days=90, features=["f"], model_root="/models")
    blended, _ = build_methods(ev, horizon_days=90, features=["f"], model_root="/models", tree_ablation=True)
    assert [m.name for m in plain] == ["model", "gbm"]
    assert [m.name for m in blended] == ["model", "model_network", "gbm"]
    assert isinstance(blended[1], NetworkOnlyMethod) and blended[1].model_root == "/models"
