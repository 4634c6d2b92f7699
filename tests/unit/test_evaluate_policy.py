"""Off-policy estimators (evaluate/policy.py) by hand, and the backtest's policy rows (policy_backtest.py).

The estimator tests are numpy only; the last tests run the real plan allocation on Spark on a few
hundred simulated users.
"""
import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from ulv_spark.config import load_config
from ulv_spark.evaluate import bootstrap as B
from ulv_spark.evaluate import policy as P
from ulv_spark.evaluate.backtest import Split, SplitResult
from ulv_spark.evaluate.policy_backtest import budget_points, plan_choices, split_policy_rows, uplift_frame

ARMS = ["control", "coupon"]


# --------------------------------------------------------------------------------------------
# estimators by hand
# --------------------------------------------------------------------------------------------
def test_ipw_on_a_tiny_frame_by_hand():
    logged = np.array(["control", "coupon", "coupon", "control"])
    y = np.array([1.0, 4.0, 2.0, 3.0])
    p = P.logged_propensity(logged, P.assignment_shares(logged))
    assert p.tolist() == [0.5, 0.5, 0.5, 0.5]
    target = P.one_hot([None, "coupon", None, "coupon"], ARMS, none_arm="control")
    assert target.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    index = np.array([0, 1, 1, 0])
    # users 0 and 1 got the policy's arm: (1 / .5 + 4 / .5) / 4
    assert P.ipw_terms(y, index, target, p).tolist() == [2.0, 8.0, 0.0, 0.0]
    assert P.estimate(P.ipw_terms(y, index, target, p), None).value == 2.5


def test_ipw_with_unequal_propensities_by_hand():
    logged = np.array(["a", "b", "b", "c"])
    shares = P.assignment_shares(logged)
    assert shares == {"a": 0.25, "b": 0.5, "c": 0.25}
    p = P.logged_propensity(logged, shares)
    target = P.one_hot(["a", "a", "b", "c"], ["a", "b", "c"], none_arm="a")
    terms = P.ipw_terms(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 1, 2]), target, p)
    assert terms.tolist() == [4.0, 0.0, 6.0, 16.0]
    # a conf value replaces the shares
    assert P.logged_propensity(logged, {"a": 0.2, "b": 0.6, "c": 0.2}).tolist() == [0.2, 0.6, 0.6, 0.2]


def test_a_logged_arm_without_propensity_is_refused():
    with pytest.raises(ValueError, match=r"no positive assignment probability for logged arm\(s\) \['c'\]"):
        P.logged_propensity(["a", "c"], {"a": 1.0, "c": 0.0})
    with pytest.raises(ValueError, match="outside"):
        P.one_hot(["ship"], ARMS, none_arm="control")


def test_dr_equals_ipw_when_the_outcome_model_is_zero():
    rng = np.random.default_rng(1)
    n = 50
    index = rng.integers(0, 3, n)
    p = np.array([0.2, 0.3, 0.5])[index]
    y = rng.gamma(2.0, 3.0, n)
    target = np.eye(3)[rng.integers(0, 3, n)]
    np.testing.assert_array_equal(P.dr_terms(y, index, target, p, np.zeros((n, 3))),
                                  P.ipw_terms(y, index, target, p))


def test_dr_is_exact_when_the_outcome_model_is_exact():
    # deterministic potential outcomes Y[u, k]: with mu = Y every residual is 0, so DR is the true value
    Y = np.array([[1.0, 5.0], [2.0, 2.5], [0.0, 7.0], [4.0, 1.0]])
    index = np.array([1, 0, 0, 1])
    target = P.one_hot(["coupon", None, "coupon", None], ARMS, none_arm="control")
    got = P.dr_terms(Y[np.arange(4), index], index, target, np.full(4, 0.5), Y)
    assert got.tolist() == [5.0, 2.0, 7.0, 4.0]
    assert got.mean() == (Y * target).sum(axis=1).mean() == 4.5


def test_ipw_and_dr_are_unbiased_over_every_randomisation():
    # every assignment of 4 users to 2 arms with p(coupon) = 1/4: the probability-weighted mean of
    # the estimate equals the true value exactly, for IPW and for DR with a wrong outcome model
    Y = np.array([[1.0, 5.0], [2.0, 2.5], [0.0, 7.0], [4.0, 1.0]])
    target = P.one_hot(["coupon", None, "coupon", "coupon"], ARMS, none_arm="control")
    wrong_mu = np.array([[3.0, 1.0], [0.5, 0.5], [2.0, 2.0], [1.0, 9.0]])
    truth = (Y * target).sum(axis=1).mean()
    prob = np.array([0.75, 0.25])
    means = {"ipw": 0.0, "dr": 0.0}
    for assignment in itertools.product([0, 1], repeat=4):
        index = np.array(assignment)
        weight = float(np.prod(prob[index]))
        y = Y[np.arange(4), index]
        for est in means:
            means[est] += weight * P.estimator_terms(est, y, index, target, prob[index], wrong_mu).mean()
    assert means["ipw"] == pytest.approx(truth, abs=1e-12)
    assert means["dr"] == pytest.approx(truth, abs=1e-12)


def test_random_at_the_same_budget_spreads_the_counts():
    got = P.spread({"coupon": 1, "control": 3}, 4, ARMS, none_arm="control")
    assert got.tolist() == [[0.75, 0.25]] * 4
    with pytest.raises(ValueError, match="exceed"):
        P.spread({"coupon": 5}, 4, ARMS, none_arm="control")


def test_bootstrap_means_are_the_count_weighted_means_of_the_paired_resamples():
    terms = np.column_stack([np.arange(6.0), np.ones(6)])
    got = P.bootstrap_means(terms, resamples=5, seed=3)
    index = next(B.resample_index(6, 5, 3))
    expected = B.resample_counts(index, 6) @ terms / 6
    np.testing.assert_array_equal(got, expected)
    assert got[:, 1].tolist() == [1.0] * 5
    est = P.estimate(terms[:, 0], got[:, 0])
    assert est.value == 2.5 and est.lo <= est.hi
    assert (est.lo, est.hi) == tuple(np.percentile(got[:, 0], [2.5, 97.5]))


def test_true_gain_is_the_mean_true_uplift_of_the_chosen_arms():
    tau = np.array([[0.0, 2.0], [0.0, -1.0], [0.0, 4.0]])
    assert P.true_gain(P.one_hot(["coupon", "coupon", None], ARMS, none_arm="control"), tau) == pytest.approx(1 / 3)
    assert P.true_gain(P.spread({"coupon": 3}, 3, ARMS, none_arm="control"), tau) == pytest.approx(5 / 3)


def test_profit_is_the_margin_on_the_gain_net_of_the_mean_arm_cost():
    target = P.one_hot(["coupon", "coupon", None, None], ARMS, none_arm="control")
    cost = P.mean_cost(target, np.array([0.0, 1.5]))
    assert cost == pytest.approx(0.75)
    assert P.profit(4.0, 0.3, cost) == pytest.approx(0.45)
    assert P.parse_policy_metric("policy_true_profit_value_long[budget=none]") == ("true_profit", "value_long", "",
                                                                                   "none")


def test_policy_metric_names_round_trip():
    name = P.policy_metric("dr_gain", "value_long", "lo", "0.25")
    assert name == "policy_dr_gain_value_long_lo[budget=0.25]"
    assert P.parse_policy_metric(name) == ("dr_gain", "value_long", "lo", "0.25")
    assert P.parse_policy_metric("policy_ipw_value") == ("ipw", "value", "", None)
    assert P.parse_policy_metric("qini_value") is None and not P.is_policy_metric("qini_value")


def test_budget_points_are_shares_of_sending_everyone_an_arm():
    assert budget_points(["control", "coupon", "ship"], "control", {"coupon": 2.0, "ship": 1.0}, 10, [0.1, 0.5]) == [
        ("0.1", pytest.approx(1.5)), ("0.5", pytest.approx(7.5)), ("none", None)]
    assert budget_points(ARMS, "control", {}, 10, [0.1]) == [("none", None)]


def test_uplift_frame_has_one_row_per_user_and_arm():
    users = pd.DataFrame({"user_id": ["a", "b"]})
    pred = pd.DataFrame({"uplift_value:coupon": [1.0, 2.0], "uplift_value_long:coupon": [3.0, 4.0]})
    got = uplift_frame(users, pred, ["coupon", "ship"], as_of=dt.date(2025, 1, 1), source="model")
    assert got[["user_id", "arm", "uplift_value", "uplift_value_long", "uplift_conversion"]].values.tolist() == [
        ["a", "coupon", 1.0, 3.0, 0.0], ["b", "coupon", 2.0, 4.0, 0.0]]


# --------------------------------------------------------------------------------------------
# the backtest's policy rows on a simulated randomised campaign (real Spark allocation)
# --------------------------------------------------------------------------------------------
def _cfg(tmp_path, **evaluate):
    path = tmp_path / "conf.yaml"
    extra = ", ".join(f"{k}: {v}" for k, v in evaluate.items())
    path.write_text("score: {margin: 1.0, arm_costs: {coupon: 1.0}}\n"
                    "plan: {short_term_weight: 1.0}\n"
                    f"evaluate: {{bootstrap_resamples: 300{', ' + extra if extra else ''}}}\n")
    return load_config(str(path))


def _experiment(n=600, seed=0):
    """Users randomised 50/50 to coupon; the coupon lifts spend by tau >= 0 (tau known: the truth)."""
    rng = np.random.default_rng(seed)
    trait = rng.random(n)
    tau = np.where(trait > 0.6, 6.0 * trait, 0.0)
    base = rng.gamma(2.0, 2.0, n)
    coupon = rng.random(n) < 0.5
    y = base + coupon * tau + rng.normal(0.0, 1.0, n)
    test = pd.DataFrame({"user_id": [f"u{i:04d}" for i in range(n)], "arm": np.where(coupon, "coupon", "control"),
                         "is_control": ~coupon, "label_converted": 1, "label_response_value": y,
                         "true_uplift_value:coupon": tau})
    noisy = tau + rng.normal(0.0, 0.5, n)
    preds = {"model": pd.DataFrame({"user_id": test["user_id"], "uplift_value:coupon": noisy}),
             "two_model_gbm": pd.DataFrame({"user_id": test["user_id"], "uplift_value:coupon": rng.normal(1, 2, n)})}
    res = SplitResult(split=Split(dt.date(2025, 8, 1), 60), test=test, predictions=preds)
    return res, tau


def _wide(rows):
    return {(r["method"], r["metric"]): r["value"] for r in rows}


def test_plan_choices_take_the_top_users_within_the_budget(spark, tmp_path):
    cfg = _cfg(tmp_path)
    uplift = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "as_of_date": dt.date(2025, 1, 1), "campaign_id": "x",
                           "arm": "coupon", "uplift_conversion": 0.0, "uplift_value": [5.0, 0.5, 3.0, 9.0],
                           "uplift_value_long": np.nan, "model_version": "m"})
    # objective = uplift - 1: b is not eligible; a budget of 2 buys the two best (d, a)
    assert plan_choices(spark, uplift, ["a", "b", "c", "d"], budget=2.0, cfg=cfg) == ["coupon", None, None, "coupon"]
    assert plan_choices(spark, uplift, ["a", "b", "c", "d"], budget=None, cfg=cfg) == ["coupon", None, "coupon",
                                                                                        "coupon"]


def test_policy_rows_cover_every_policy_and_the_plan_estimate_covers_the_truth(spark, tmp_path):
    cfg = _cfg(tmp_path, policy_budget_shares="[0.2, 0.4]")
    res, tau = _experiment()
    rows = split_policy_rows(spark, res, cfg, dataset="sim")
    wide = _wide(rows)
    methods = {r["method"] for r in rows}
    assert methods == {"send_none", "send_all[coupon]", "model", "random", "two_model_gbm"}
    # send_none's gain is 0 by construction, and its IPW value is the control mean / its share
    assert wide[("send_none", "policy_ipw_gain_value")] == 0.0
    control = res.test["arm"] == "control"
    expected = res.test.loc[control, "label_response_value"].sum() / control.mean() / len(res.test)
    assert wide[("send_none", "policy_ipw_value")] == pytest.approx(expected, rel=1e-12)
    # the truth of send-all is the mean true uplift; of the plan, the mean over the users it sends
    assert wide[("send_all[coupon]", "policy_true_gain_value")] == pytest.approx(tau.mean())
    for budget in ("0.2", "0.4", "none"):
        for est in ("ipw", "dr"):
            lo = wide[("model", f"policy_{est}_gain_value_lo[budget={budget}]")]
            hi = wide[("model", f"policy_{est}_gain_value_hi[budget={budget}]")]
            truth = wide[("model", f"policy_true_gain_value[budget={budget}]")]
            assert lo <= truth <= hi, (budget, est, lo, truth, hi)
        # the model's plan beats random at the same budget (true values), and the budget binds
        assert wide[("model", f"policy_true_gain_value[budget={budget}]")] > wide[
            ("random", f"policy_true_gain_value[budget={budget}]")]
    assert wide[("model", "policy_true_gain_value[budget=0.2]")] < wide[("model", "policy_true_gain_value[budget=0.4]")]
    # profit = margin (1) x gain - mean cost (1 per user sent): sending everyone loses what the
    # users with tau = 0 cost, so the plan's true profit is above send-all's
    sent = {"send_all[coupon]": 1.0, "send_none": 0.0}
    for method, share in sent.items():
        gain = wide[(method, "policy_true_gain_value")]
        assert wide[(method, "policy_true_profit_value")] == pytest.approx(gain - share)
        assert wide[(method, "policy_dr_profit_value")] == pytest.approx(wide[(method, "policy_dr_gain_value")] - share)
        assert wide[(method, "policy_dr_profit_value_lo")] == pytest.approx(
            wide[(method, "policy_dr_gain_value_lo")] - share)
    assert wide[("model", "policy_true_profit_value[budget=none]")] > wide[("send_all[coupon]", "policy_true_profit_value")]
    # DR's interval is narrower than IPW's with a good outcome model
    width = {est: wide[("model", f"policy_{est}_gain_value_hi[budget=none]")]
             - wide[("model", f"policy_{est}_gain_value_lo[budget=none]")] for est in ("ipw", "dr")}
    assert width["dr"] < width["ipw"]


def test_the_short_term_only_plan_is_valued_beside_the_balanced_one_and_loses_in_the_long_run(spark, tmp_path):
    # a coupon that lifts this window's spend by tau but costs 2 tau later (users wait for the next one)
    res, tau = _experiment()
    rng = np.random.default_rng(1)
    long_tau = -tau + 0.5
    res.test["label_value"] = res.test["label_response_value"] + np.where(res.test["arm"] == "coupon", -2 * tau, 0.0) \
        + rng.normal(0.0, 1.0, len(tau))
    res.test["true_uplift_value_long:coupon"] = long_tau
    res.predictions["model"]["uplift_value_long:coupon"] = long_tau + rng.normal(0.0, 0.2, len(tau))
    path = tmp_path / "conf.yaml"
    path.write_text("score: {margin: 1.0, arm_costs: {coupon: 0.1}}\nplan: {short_term_weight: 0.5}\n"
                    "evaluate: {bootstrap_resamples: 100, policy_budget_shares: [0.3]}\n")
    wide = _wide(split_policy_rows(spark, res, load_config(str(path)), dataset="sim"))
    assert {m for m, _ in wide} == {"send_none", "send_all[coupon]", "model", "model[short_term]", "random",
                                    "two_model_gbm"}
    for budget in ("0.3", "none"):
        balanced = wide[("model", f"policy_true_gain_value_long[budget={budget}]")]
        short = wide[("model[short_term]", f"policy_true_gain_value_long[budget={budget}]")]
        assert balanced > short, budget
        # ... while the short-term plan wins on the window's own value
        assert wide[("model[short_term]", f"policy_true_gain_value[budget={budget}]")] > wide[
            ("model", f"policy_true_gain_value[budget={budget}]")]
    assert wide[("model", "policy_true_gain_value_long[budget=none]")] > wide[("send_all[coupon]",
                                                                                "policy_true_gain_value_long")]
    # a plan that already ignores the long term (weight 1) gets no short-term twin
    assert "model[short_term]" not in {r["method"] for r in split_policy_rows(spark, res, _cfg(tmp_path), dataset="s")}


def test_policy_rows_need_a_control_arm(spark, tmp_path):
    res, _ = _experiment(n=20)
    res.test["is_control"] = False
    assert split_policy_rows(spark, res, _cfg(tmp_path), dataset="sim") == []
    assert "no randomised exposures with a control arm" in res.notes[-1]


def test_report_shows_the_policy_table_and_the_budget_curve():
    from ulv_spark.evaluate.backtest import METRIC_COLUMNS, BacktestResult
    from ulv_spark.evaluate.report import metrics_table, policy_table, render_report

    res, _ = _experiment(n=20)
    res.test["label_value"] = res.test["label_response_value"]
    split = res.split.name
    rows = [("send_none", P.policy_metric("dr", "value"), 1.0)]
    for method, base in (("model", 3.0), ("two_model_gbm", 2.0), ("random", 1.5)):
        for budget in ("0.2", "0.4", "none"):
            for stat, shift in (("", 0.0), ("lo", -0.5), ("hi", 0.5)):
                rows.append((method, P.policy_metric("dr", "value", stat, budget), base + shift))
    metrics = pd.DataFrame([("sim", split, m, k, v) for m, k, v in rows], columns=list(METRIC_COLUMNS))
    page = render_report(BacktestResult("sim", [res], metrics))
    assert 'data-plot="budget_curve"' in page and 'class="policies"' in page
    table = policy_table(metrics, split)
    assert "<td>3 [2.5, 3.5]</td>" in table and "model (budget 0.2)" in table
    # policy rows stay out of the per-method metrics table
    assert "policy_dr" not in metrics_table(metrics, split)


def test_truth_coverage_pairs_each_estimate_with_the_truth():
    from ulv_spark.evaluate.backtest import METRIC_COLUMNS
    from ulv_spark.evaluate.policy_backtest import truth_coverage

    rows = [("model", "policy_dr_gain_value[budget=0.1]", 2.0), ("model", "policy_dr_gain_value_lo[budget=0.1]", 1.0),
            ("model", "policy_dr_gain_value_hi[budget=0.1]", 3.0), ("model", "policy_true_gain_value[budget=0.1]", 3.5),
            ("model", "policy_ipw_gain_value[budget=0.1]", 2.5)]
    metrics = pd.DataFrame([("sim", "s", m, k, v) for m, k, v in rows], columns=list(METRIC_COLUMNS))
    got = truth_coverage(metrics)
    assert got == [
        {"split": "s", "policy": "model", "budget": "0.1", "outcome": "value", "estimator": "ipw", "estimate": 2.5,
         "lo": None, "hi": None, "truth": 3.5, "covered": None},
        {"split": "s", "policy": "model", "budget": "0.1", "outcome": "value", "estimator": "dr", "estimate": 2.0,
         "lo": 1.0, "hi": 3.0, "truth": 3.5, "covered": False}]


def test_policy_headline_gives_each_gain_with_its_interval():
    from ulv_spark.evaluate.backtest import METRIC_COLUMNS
    from ulv_spark.evaluate.policy_backtest import policy_headline

    rows = [("model", "policy_dr_gain_value[budget=0.1]", 2.0), ("model", "policy_dr_gain_value_lo[budget=0.1]", 1.0),
            ("model", "policy_dr_gain_value_hi[budget=0.1]", 3.0), ("send_all[x]", "policy_dr_gain_value", 0.5),
            ("model", "policy_ipw_gain_value[budget=0.1]", 9.0), ("model", "qini_value", 1.0)]
    metrics = pd.DataFrame([("sim", "s", m, k, v) for m, k, v in rows], columns=list(METRIC_COLUMNS))
    assert policy_headline(metrics) == {"s": {"value": {"model@0.1": [2.0, 1.0, 3.0], "send_all[x]": [0.5, None, None]}}}


def test_conf_propensities_must_cover_every_logged_arm(spark, tmp_path):
    res, _ = _experiment(n=20)
    with pytest.raises(ValueError, match=r"evaluate.policy_propensities: .*\['coupon'\]"):
        split_policy_rows(spark, res, _cfg(tmp_path, policy_propensities="{control: 0.5}"), dataset="sim")
