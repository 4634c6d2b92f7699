"""Baselines: exact values on hand-written frames; BG/NBD against lifetimes run directly."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ulv_spark.evaluate import metrics as M
from ulv_spark.evaluate.baselines import (BgNbdGammaGamma, ClassTransformationUplift, NotApplicable, RfmHeuristic,
                                          TabularGbm, TwoModelUplift, XLearnerUplift, infer_feature_columns,
                                          uplift_column)

CDNOW = Path(__import__("lifetimes").__file__).parent / "datasets" / "CDNOW_master.txt"


@pytest.fixture(scope="module")
def cdnow_summary():
    """lifetimes' own calibration/holdout summary of CDNOW (calibration ends 1997-09-30)."""
    from lifetimes.utils import calibration_and_holdout_data

    tx = pd.read_csv(CDNOW, sep=r"\s+", dtype={"customer_id": str, "date": str})
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    return calibration_and_holdout_data(tx, "customer_id", "date", calibration_period_end="1997-09-30",
                                        observation_period_end="1998-06-30", monetary_value_col="dollar_value")


def _rfm_frame(summary):
    return pd.DataFrame({"user_id": summary.index.to_numpy(), "frequency": summary["frequency_cal"].to_numpy(),
                         "recency": summary["recency_cal"].to_numpy(), "T": summary["T_cal"].to_numpy(),
                         "monetary_value": summary["monetary_value_cal"].to_numpy()})


def test_bgnbd_gg_reproduces_lifetimes_run_directly_on_cdnow(cdnow_summary):
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    s = cdnow_summary
    frame = _rfm_frame(s)
    method = BgNbdGammaGamma(horizon_days=273, penalizer=0.001).fit(frame)
    pred = method.predict(frame)

    bgf = BetaGeoFitter(penalizer_coef=0.001).fit(s["frequency_cal"], s["recency_cal"], s["T_cal"])
    rep = s[(s["frequency_cal"] > 0) & (s["monetary_value_cal"] > 0)]
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(rep["frequency_cal"], rep["monetary_value_cal"])
    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
        s["duration_holdout"], s["frequency_cal"], s["recency_cal"], s["T_cal"]).to_numpy()
    spend = ggf.conditional_expected_average_profit(s["frequency_cal"], s["monetary_value_cal"]).to_numpy() * purchases

    for key in ("r", "alpha", "a", "b"):
        assert method.bgf_.params_[key] == pytest.approx(bgf.params_[key], rel=1e-9)
    np.testing.assert_allclose(pred["expected_purchases"], purchases, rtol=1e-9)
    np.testing.assert_allclose(pred["expected_value"], spend, rtol=1e-9)
    np.testing.assert_allclose(pred["p_alive"], bgf.conditional_probability_alive(
        s["frequency_cal"], s["recency_cal"], s["T_cal"]), rtol=1e-9)
    # the published CDNOW fit (Fader, Hardie & Lee 2005): r .243, alpha 4.41 weeks, a .793, b 2.426
    assert bgf.params_["r"] == pytest.approx(0.25, abs=0.02)
    assert pred["expected_purchases"].sum() == pytest.approx(s["frequency_holdout"].sum(), rel=0.15)


def test_bgnbd_churn_matches_lifetimes_unconditional_probabilities_for_non_repeaters(cdnow_summary):
    # With no repeat purchase BG/NBD says the customer is alive, so
    # P(no purchase in (T, T + H] | none in (0, T]) = P0(T + H) / P0(T), P0 from lifetimes.
    method = BgNbdGammaGamma(horizon_days=90).fit(_rfm_frame(cdnow_summary))
    ages = np.array([0.0, 30.0, 200.0])
    frame = pd.DataFrame({"user_id": ["a", "b", "c"], "frequency": 0.0, "recency": 0.0, "T": ages,
                          "monetary_value": 0.0})
    churn = method.predict(frame)["churn_probability"].to_numpy()
    p0 = lambda t: float(method.bgf_.probability_of_n_purchases_up_to_time(t, 0))  # noqa: E731
    expected = [p0(a + 90) / p0(a) if a > 0 else p0(90) for a in ages]
    np.testing.assert_allclose(churn, expected, rtol=1e-9)


def test_bgnbd_churn_on_cdnow_ranks_holdout_churners(cdnow_summary):
    s = cdnow_summary
    frame = _rfm_frame(s)
    pred = BgNbdGammaGamma(horizon_days=273).fit(frame).predict(frame)
    churned = (s["frequency_holdout"].to_numpy() == 0).astype(int)
    # measured: AUC .747, mean predicted churn .734 vs observed .701, ECE .040
    assert M.roc_auc(churned, pred["churn_probability"]) > 0.72
    assert pred["churn_probability"].mean() == pytest.approx(churned.mean(), abs=0.05)
    assert np.all((pred["churn_probability"] >= 0) & (pred["churn_probability"] <= 1))
    np.testing.assert_allclose(pred["p_purchase"], 1 - pred["churn_probability"])


def test_bgnbd_rejects_missing_rfm():
    frame = pd.DataFrame({"user_id": ["a"], "frequency": [None], "recency": [0.0], "T": [1.0],
                          "monetary_value": [0.0]})
    with pytest.raises(ValueError, match="must not be null"):
        BgNbdGammaGamma(horizon_days=30).fit(frame)


TRAIN = pd.DataFrame({
    "user_id": ["u1", "u2", "u3", "u4"],
    "frequency": [0.0, 1.0, 3.0, 2.0], "recency": [0.0, 50.0, 80.0, 10.0],
    "T": [100.0, 60.0, 90.0, 200.0], "monetary_value": [0.0, 10.0, 30.0, 20.0],
    "label_value": [0.0, 5.0, 40.0, 15.0], "label_churned": [1, 0, 0, 0],
})


def test_rfm_heuristic_scores_and_predictions_by_hand():
    # medians: days since last purchase (T - recency) 100, 10, 10, 190 -> 55; frequency 1.5;
    # monetary 15.  Scores R+F+M: u1 1+1+1=3, u2 2+1+1=4, u3 2+2+2=6, u4 1+2+2=5.
    model = RfmHeuristic(quantiles=2).fit(TRAIN)
    np.testing.assert_array_equal(model.predict(TRAIN)["rfm_score"], [3, 4, 6, 5])
    new = pd.DataFrame({"user_id": ["e1", "e2", "e3"], "frequency": [3.0, 0.0, 1.0], "recency": [80.0, 0.0, 0.0],
                        "T": [90.0, 30.0, 20.0], "monetary_value": [30.0, 0.0, None]})
    pred = model.predict(new)
    # e2: 30 days since last (R 2), F 1, M 1 -> 4 like u2; e3: M missing scores 1 -> 4
    np.testing.assert_array_equal(pred["rfm_score"], [6, 4, 4])
    np.testing.assert_allclose(pred["expected_value"], [40.0, 5.0, 5.0])
    np.testing.assert_allclose(pred["churn_probability"], [0.0, 0.0, 0.0])


def test_rfm_heuristic_falls_back_to_the_overall_mean_for_an_unseen_score():
    model = RfmHeuristic(quantiles=3).fit(TRAIN)  # training scores 3, 4, 8, 5
    best = pd.DataFrame({"user_id": ["e"], "frequency": [5.0], "recency": [10.0], "T": [10.0],
                         "monetary_value": [100.0]})
    pred = model.predict(best)
    assert pred["rfm_score"].iloc[0] == 9
    assert pred["expected_value"].iloc[0] == pytest.approx(15.0)
    assert pred["churn_probability"].iloc[0] == pytest.approx(0.25)


def _tabular(n, seed):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.random(n), rng.random(n)
    value = np.where(x2 > 0.5, 0.0, 100 * x1)
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "x1": x1, "x2": x2,
                         "label_value": value, "label_churned": (x2 > 0.5).astype(int),
                         "label_purchases": (value > 0).astype(int)})


def test_gbm_uses_only_feature_columns_and_learns_value_and_churn():
    train, test = _tabular(3000, 1), _tabular(1000, 2)
    assert infer_feature_columns(train.assign(true_expected_spend=1.0)) == ["x1", "x2"]
    pred = TabularGbm(max_iter=50, threads=1).fit(train).predict(test)
    assert M.normalized_gini(test["label_value"], pred["expected_value"]) > 0.95
    assert M.roc_auc(test["label_churned"], pred["churn_probability"]) > 0.99
    assert pred["expected_value"].min() >= 0
    np.testing.assert_allclose(pred["p_purchase"], 1 - pred["churn_probability"])


def test_two_model_uplift_recovers_a_segment_effect():
    # randomised arms; coupon lifts conversion from 10 % to 40 % only where x1 = 1
    rng = np.random.default_rng(3)
    n = 6000
    x1 = rng.integers(0, 2, n).astype(float)
    arm = rng.choice(["control", "coupon"], n)
    p = 0.1 + 0.3 * ((arm == "coupon") & (x1 == 1))
    conv = (rng.random(n) < p).astype(int)
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "x1": x1, "x_noise": rng.random(n),
                          "arm": arm, "is_control": arm == "control", "label_converted": conv,
                          "label_response_value": conv * 50.0})
    model = TwoModelUplift(max_iter=30, threads=1).fit(frame)
    assert model.control_arm_ == "control" and model.arms_ == ["coupon"]
    pred = model.predict(frame)
    up = pred[uplift_column("conversion", "coupon")].to_numpy()
    assert up[x1 == 1].mean() == pytest.approx(0.3, abs=0.05)
    assert up[x1 == 0].mean() == pytest.approx(0.0, abs=0.05)
    assert pred[uplift_column("value", "coupon")][x1 == 1].mean() == pytest.approx(15.0, abs=3.0)


def test_two_model_uplift_needs_one_control_arm():
    frame = pd.DataFrame({"user_id": ["a", "b"], "x": [1.0, 2.0], "arm": ["x", "y"], "is_control": [False, False],
                          "label_converted": [1, 0], "label_response_value": [1.0, 0.0]})
    with pytest.raises(ValueError, match="one control arm"):
        TwoModelUplift().fit(frame)


def _segment_campaign(n=6000, seed=3, control_share=0.5):
    """Randomised arms; the coupon lifts conversion from 10 % to 40 % (and spend by 50 per
    conversion) only where x1 = 1: the true uplift is 0.3 / 15 there and 0 elsewhere."""
    rng = np.random.default_rng(seed)
    x1 = rng.integers(0, 2, n).astype(float)
    arm = np.where(rng.random(n) < control_share, "control", "coupon")
    p = 0.1 + 0.3 * ((arm == "coupon") & (x1 == 1))
    conv = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "x1": x1, "x_noise": rng.random(n),
                         "arm": arm, "is_control": arm == "control", "label_converted": conv,
                         "label_response_value": conv * 50.0}), x1


@pytest.mark.parametrize("learner", [XLearnerUplift, ClassTransformationUplift])
def test_x_learner_and_class_transformation_rank_the_responsive_segment_first(learner):
    frame, x1 = _segment_campaign()
    model = learner(max_iter=30, threads=1).fit(frame)
    assert model.control_arm_ == "control" and model.arms_ == ["coupon"]
    assert model.propensity_["coupon"] == pytest.approx((frame["arm"] == "coupon").mean())
    pred = model.predict(frame)
    assert list(pred.columns) == ["user_id", "uplift_conversion:coupon", "uplift_value:coupon"]
    for kind, effect in (("conversion", 0.3), ("value", 15.0)):
        up = pred[uplift_column(kind, "coupon")].to_numpy()
        # the treated-responsive users are ranked above the rest, and the effect sizes are right
        assert M.roc_auc(x1, up) > 0.9, kind
        assert up[x1 == 1].mean() == pytest.approx(effect, rel=0.25), kind
        assert up[x1 == 0].mean() == pytest.approx(0.0, abs=0.1 * effect), kind


def test_class_transformation_equals_scikit_uplift_on_the_same_estimator():
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    sklift = pytest.importorskip("sklift.models")
    frame, _ = _segment_campaign(n=3000, seed=5, control_share=0.3)  # unbalanced arms: the weights matter
    ours = ClassTransformationUplift(max_iter=25, learning_rate=0.1, random_state=7, threads=1).fit(frame)
    pred = ours.predict(frame)
    x = frame[["x1", "x_noise"]].to_numpy(float)
    w = (frame["arm"] == "coupon").to_numpy(int)
    p = w.mean()
    est = dict(max_iter=25, learning_rate=0.1, random_state=7)
    with threadpool_limits(1, user_api="openmp"):  # as ours: OpenMP spinning on a busy machine is 30x slower
        conv = sklift.ClassTransformation(HistGradientBoostingClassifier(**est)).fit(
            x, frame["label_converted"].to_numpy(), w,
            estimator_fit_params={"sample_weight": np.where(w == 1, 0.5 / p, 0.5 / (1 - p))})
        np.testing.assert_allclose(pred["uplift_conversion:coupon"], conv.predict(x), rtol=0, atol=1e-12)
        value = sklift.ClassTransformationReg(HistGradientBoostingRegressor(**est), propensity_val=p).fit(
            x, frame["label_response_value"].to_numpy(float), w)
        np.testing.assert_allclose(pred["uplift_value:coupon"], value.predict(x), rtol=0, atol=1e-9)


def test_uplift_learners_skip_quietly_without_campaigns_and_need_one_control_arm():
    frame, _ = _segment_campaign(n=200)
    for learner in (XLearnerUplift, ClassTransformationUplift):
        with pytest.raises(NotApplicable, match="no campaigns in the training rows"):
            learner().fit(frame.assign(arm=None, label_converted=np.nan))
        with pytest.raises(ValueError, match=f"{learner.name}: need exactly one control arm"):
            learner().fit(frame.assign(is_control=False))
