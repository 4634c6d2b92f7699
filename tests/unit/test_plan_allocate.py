"""The promotion plan's allocation: exact hand-written cases and the optimality gap against an exact MILP.

Real Spark throughout; each case is a dozen users or fewer.
"""
import datetime as dt
import random

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from ulv_spark.plan.allocate import allocate, best_arm_for_everyone, find_price, plan_candidates, spend

D = dt.date(2025, 10, 1)
UPLIFT = ("user_id string, as_of_date date, campaign_id string, arm string, uplift_conversion double, "
          "uplift_value double, expected_profit double, recommended boolean, model_version string, run_id string")
PLAN = "user_id string, arm string, objective double, cost double"


def _uplift(spark, rows, long=False):
    """promo_uplift rows from (user, arm, uplift_value[, uplift_value_long]); conversion = value / 100."""
    data = [(u, D, "c1", a, v / 100.0, float(v), 0.0, False, "m1", "r1") + ((float(rest[0]),) if long else ())
            for u, a, v, *rest in rows]
    return spark.createDataFrame(data, UPLIFT + (", uplift_value_long double" if long else ""))


def _plan(spark, rows, *, costs, budget=None, capacities=None, min_roi=0.0, weight=1.0, margin=0.5, long=False,
          passes=3, per_pass=8):
    candidates = plan_candidates(_uplift(spark, rows, long), margin=margin, arm_costs=costs,
                                 short_term_weight=weight, min_roi=min_roi)
    arms = sorted({r[1] for r in rows})
    return allocate(candidates, arms=arms, budget=budget, capacities=capacities or {}, price_passes=passes,
                    prices_per_pass=per_pass, costs=costs)


def _picked(spark, allocation):
    return allocation.plan.select("user_id", "arm", "objective", "cost")


def _hash_order(spark, users):
    """Users in the allocation's tie order: xxhash64(user_id) ascending."""
    rows = spark.createDataFrame([(u,) for u in users], "user_id string").selectExpr(
        "user_id", "xxhash64(user_id) AS h").collect()
    return [r["user_id"] for r in sorted(rows, key=lambda r: r["h"])]


def test_candidates_blend_short_and_long_uplift_and_mark_what_pays_off(spark):
    rows = [("u1", "coupon", 20.0, 60.0), ("u1", "ship", 4.0, -10.0), ("u2", "coupon", 10.0, 2.0)]
    got = plan_candidates(_uplift(spark, rows, long=True), margin=0.5, arm_costs={"coupon": 2.0, "ship": 1.0},
                          short_term_weight=0.25, min_roi=3.0)
    # objective = (0.25 short + 0.75 long) * 0.5 - cost; eligible: objective > 0 and objective >= 3 * cost
    expected = spark.createDataFrame([
        ("u1", "coupon", 2.0, 60.0, (0.25 * 20 + 0.75 * 60) * 0.5 - 2.0, True),   # 23.0 >= 6
        ("u1", "ship", 1.0, -10.0, (0.25 * 4 - 0.75 * 10) * 0.5 - 1.0, False),     # -4.25
        ("u2", "coupon", 2.0, 2.0, (0.25 * 10 + 0.75 * 2) * 0.5 - 2.0, False),     # 0.0: not > 0
    ], "user_id string, arm string, cost double, uplift_value_long double, objective double, eligible boolean")
    assert_approx_df_equality(got.select(*expected.columns), expected, 1e-12, ignore_row_order=True,
                              ignore_nullable=True)


def test_without_long_term_uplift_the_weight_has_no_effect(spark):
    rows = [("u1", "coupon", 20.0), ("u2", "coupon", 3.0)]
    outs = [plan_candidates(_uplift(spark, rows), margin=0.5, arm_costs={"coupon": 2.0}, short_term_weight=w,
                            min_roi=0.0).select("user_id", "uplift_value_long", "objective", "eligible")
            for w in (0.0, 1.0)]
    expected = spark.createDataFrame([("u1", None, 8.0, True), ("u2", None, -0.5, False)],
                                     "user_id string, uplift_value_long double, objective double, eligible boolean")
    for got in outs:
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_single_arm_budget_sends_the_top_users_ties_by_user_hash(spark):
    # cost 2, budget 7: three users; objectives 14, 9, 4, 4, 4, 1.5 (value * 0.5 - 2); two of the three 4s tie
    rows = [("a", "coupon", 32.0), ("b", "coupon", 22.0), ("c", "coupon", 12.0), ("d", "coupon", 12.0),
            ("e", "coupon", 12.0), ("f", "coupon", 7.0)]
    result = _plan(spark, rows, costs={"coupon": 2.0}, budget=7.0)
    tied = _hash_order(spark, ["c", "d", "e"])
    expected = spark.createDataFrame([("a", "coupon", 14.0, 2.0), ("b", "coupon", 9.0, 2.0),
                                      (tied[0], "coupon", 4.0, 2.0)], PLAN)
    assert_df_equality(_picked(spark, result), expected, ignore_row_order=True, ignore_nullable=True)
    assert result.info["cost"] == 6.0 and result.info["users"] == 3
    # the same plan from reordered input rows
    again = _plan(spark, list(reversed(rows)), costs={"coupon": 2.0}, budget=7.0)
    assert_df_equality(_picked(spark, again), expected, ignore_row_order=True, ignore_nullable=True)


def test_single_arm_capacity_and_budget_take_the_tighter_limit(spark):
    rows = [(u, "coupon", v) for u, v in (("a", 32.0), ("b", 22.0), ("c", 12.0), ("d", 10.0))]
    by_capacity = _plan(spark, rows, costs={"coupon": 2.0}, budget=100.0, capacities={"coupon": 2})
    expected = spark.createDataFrame([("a", "coupon", 14.0, 2.0), ("b", "coupon", 9.0, 2.0)], PLAN)
    assert_df_equality(_picked(spark, by_capacity), expected, ignore_row_order=True, ignore_nullable=True)
    assert by_capacity.info["capacity_reached"] == ["coupon"]


def test_two_arms_under_a_budget_reach_the_optimum_by_moving_a_user_to_the_dearer_arm(spark):
    # margin 0.5; coupon costs 2, ship 1. Budget 4: the optimum (29.5) is a->coupon, b->ship, d->ship;
    # at the budget's price a is indifferent between the arms, and the fill moves it to the coupon.
    rows = [("a", "coupon", 30.0), ("b", "coupon", 20.0), ("c", "coupon", 10.0), ("d", "coupon", 10.0),
            ("e", "coupon", 5.0), ("a", "ship", 25.0), ("b", "ship", 25.0), ("c", "ship", 3.0),
            ("d", "ship", 12.0), ("e", "ship", 1.0)]
    result = _plan(spark, rows, costs={"coupon": 2.0, "ship": 1.0}, budget=4.0)
    expected = spark.createDataFrame([("a", "coupon", 13.0, 2.0), ("b", "ship", 11.5, 1.0), ("d", "ship", 5.0, 1.0)],
                                     PLAN)
    assert_df_equality(_picked(spark, result), expected, ignore_row_order=True, ignore_nullable=True)
    assert result.info["objective"] == 29.5 and result.info["cost"] == 4.0
    assert 29.5 <= result.upper_bound <= 29.5 + 0.05  # the Lagrangian bound, to the price grid's resolution

    # no budget, ship capped at one user: d (ship 5.0) is displaced and takes the coupon (3.0)
    capped = _plan(spark, rows, costs={"coupon": 2.0, "ship": 1.0}, capacities={"ship": 1})
    expected = spark.createDataFrame([("a", "coupon", 13.0, 2.0), ("b", "ship", 11.5, 1.0), ("c", "coupon", 3.0, 2.0),
                                      ("d", "coupon", 3.0, 2.0), ("e", "coupon", 0.5, 2.0)], PLAN)
    assert_df_equality(_picked(spark, capped), expected, ignore_row_order=True, ignore_nullable=True)


def test_min_roi_and_zero_budget(spark):
    rows = [("a", "coupon", 30.0), ("b", "coupon", 12.0), ("a", "ship", 8.0), ("b", "ship", 6.0)]
    costs = {"coupon": 2.0, "ship": 0.0}
    # objective/cost: a coupon 13/2 = 6.5, b coupon 4/2 = 2; ship is free (objective 4 and 3)
    result = _plan(spark, rows, costs=costs, min_roi=3.0)
    expected = spark.createDataFrame([("a", "coupon", 13.0, 2.0), ("b", "ship", 3.0, 0.0)], PLAN)
    assert_df_equality(_picked(spark, result), expected, ignore_row_order=True, ignore_nullable=True)
    broke = _plan(spark, rows, costs=costs, budget=0.0)  # only free arms fit
    expected = spark.createDataFrame([("a", "ship", 4.0, 0.0), ("b", "ship", 3.0, 0.0)], PLAN)
    assert_df_equality(_picked(spark, broke), expected, ignore_row_order=True, ignore_nullable=True)


def test_send_to_everyone_gives_each_user_the_best_arm_even_at_a_loss(spark):
    rows = [("a", "coupon", 30.0), ("a", "ship", 30.0), ("b", "coupon", 1.0), ("b", "ship", 0.0)]
    candidates = plan_candidates(_uplift(spark, rows), margin=0.5, arm_costs={"coupon": 2.0, "ship": 2.0},
                                 short_term_weight=1.0, min_roi=0.0)
    expected = spark.createDataFrame([("a", "coupon", 13.0, 2.0), ("b", "coupon", -1.5, 2.0)], PLAN)
    assert_df_equality(best_arm_for_everyone(candidates).select("user_id", "arm", "objective", "cost"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_price_search_keeps_a_price_that_fits_and_narrows_it():
    costs, caps = {1: 2.0, 2: 1.0}, {}
    # preferred arm per price: a stand-in for one aggregation over users (arm 1 dearer, left first)
    def evaluate(prices):
        return [{1: 3, 2: 1} if p < 1.0 else ({2: 3} if p < 2.5 else {}) for p in prices]

    found = find_price(evaluate, budget=4.0, price_high=5.0, passes=3, prices_per_pass=6, costs=costs,
                       capacities=caps)
    assert spend(evaluate([found.price])[0], costs, caps) <= 4.0
    assert found.price_low < 1.0 <= found.price and found.price - found.price_low < 5.0 / 5 / 7 / 7 * 1.01
    assert found.passes == 3 and found.prices_evaluated == 6 + 6 + 6


# ---- optimality gap against an exact solver --------------------------------------------------
def _milp_optimum(objective, cost, eligible, budget, caps):
    from scipy.optimize import Bounds, LinearConstraint, milp

    users, arms = objective.shape
    keep = eligible.ravel()
    n = users * arms
    rows, lb, ub = [], [], []
    for u in range(users):  # one arm per user
        row = np.zeros(n)
        row[u * arms:(u + 1) * arms] = 1
        rows.append(row), lb.append(0), ub.append(1)
    if budget is not None:
        rows.append(cost.ravel().copy()), lb.append(0), ub.append(budget)
    for a, cap in caps.items():
        row = np.zeros(n)
        row[a::arms] = 1
        rows.append(row), lb.append(0), ub.append(cap)
    upper = np.where(keep, 1.0, 0.0)
    res = milp(-objective.ravel(), constraints=LinearConstraint(np.array(rows), lb, ub), integrality=np.ones(n),
               bounds=Bounds(np.zeros(n), upper))
    assert res.success
    return -res.fun


def test_random_small_cases_stay_close_to_the_exact_optimum(spark):
    """The allocation against scipy's MILP on random cases of 10 users x 3 arms.

    Stated gap (measured here, seed 17, 3 passes of 8 prices): ratios to the optimum 1, 1, 0.976,
    0.929, 1, 1 (mean 0.984). The loss is integral: the budget left after the last user that fits
    in rank order, worth up to one user's objective when the budget buys only a few users (here
    2-4 of 10). Asserted: >= 0.9 in every case, >= 0.97 on average; and, without capacities, the
    Lagrangian bound the plan reports is never below the true optimum.
    """
    rng = random.Random(17)
    arms = ["a1", "a2", "a3"]
    ratios = []
    for case in range(6):
        costs = {a: rng.choice([0.5, 1.0, 2.0, 4.0]) for a in arms}
        rows = [(f"u{u:02d}", a, round(rng.uniform(-5, 30), 2), round(rng.uniform(-5, 40), 2))
                for u in range(10) for a in arms]
        weight, min_roi = rng.choice([1.0, 0.5, 0.0]), rng.choice([0.0, 0.0, 1.0])
        send_all = sum(costs.values()) / 3 * 10
        budget = round(send_all * rng.uniform(0.15, 0.6), 2)
        caps = {arms[0]: rng.randint(1, 4)} if case % 3 == 2 else {}
        result = _plan(spark, rows, costs=costs, budget=budget, capacities=caps, min_roi=min_roi, weight=weight,
                       long=True)
        got = {(r["user_id"], r["arm"]): (r["objective"], r["cost"]) for r in _picked(spark, result).collect()}

        objective = np.array([[(weight * v + (1 - weight) * lv) * 0.5 - costs[a]
                               for (_, a, v, lv) in rows[u * 3:(u + 1) * 3]] for u in range(10)])
        cost = np.array([[costs[a] for a in arms]] * 10)
        eligible = (objective > 0) & (objective >= min_roi * cost)
        optimum = _milp_optimum(objective, cost, eligible, budget, {arms.index(a): n for a, n in caps.items()})

        # feasibility: one arm per user, budget, capacities, ROI floor
        assert len({u for u, _ in got}) == len(got)
        assert sum(c for _, c in got.values()) <= budget + 1e-9
        for a, cap in caps.items():
            assert sum(1 for _, arm in got if arm == a) <= cap
        assert all(o > 0 and o >= min_roi * c - 1e-12 for o, c in got.values())
        value = sum(o for o, _ in got.values())
        assert value == pytest.approx(result.info["objective"])
        assert value <= optimum + 1e-9
        if not caps:
            assert result.upper_bound >= optimum - 1e-6
        ratios.append(value / optimum if optimum > 0 else 1.0)
    assert min(ratios) >= 0.9 and sum(ratios) / len(ratios) >= 0.97, ratios
