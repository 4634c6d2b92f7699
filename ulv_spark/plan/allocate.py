"""Choose at most one arm per user under a budget, per-arm capacities and a minimum ROI.

Input: the night's ``promo_uplift`` rows (one per (user_id, arm)). Per (user, arm)

    objective = (λ · short + (1 − λ) · long) · margin − cost

with short = uplift_value (response window), long = uplift_value_long when promo_uplift has that
column, else short (then λ has no effect). A (user, arm) is *eligible* when objective > 0 and
objective ≥ min_roi · cost; every user is sent at most one eligible arm.

The problem (max Σ objective · x subject to Σ cost · x ≤ budget, Σ_u x[u, a] ≤ capacity[a], one arm
per user) is solved at Spark scale with a Lagrangian price μ on the budget:

1. at price μ every user prefers the eligible arm with the highest ``objective − μ · cost`` (> 0;
   ties: the arm first by name); per arm the users are ranked by that adjusted value (ties: xxhash64
   of user_id, then user_id) and the first ``capacity[a]`` kept (a rank window per arm, only for
   arms with a capacity). The spend at μ is Σ_a cost[a] · min(n_a(μ), capacity[a]), so one
   aggregation over users (counts per price and arm, ``price_counts``) gives it for a whole grid of
   prices at once;
2. ``plan.price_passes`` passes of ``plan.prices_per_pass`` prices narrow the smallest price whose
   spend fits the budget (price_low does not fit, price fits; a price that fits is always kept, so
   the budget is never exceeded even where capacities make the spend non-monotone in μ);
3. the users kept at price are sent; then a *fill* offers the budget left to the users not sent,
   each at their best arm with room left at price_low (ties at the threshold, users displaced by a
   full arm), ranked as in 1, within the remaining capacities and, in rank order, while the running
   cost fits the remaining budget (one window over the fill set only, which after the passes holds
   the users tied at the price).

Exact for one arm (the plan is the top min(capacity, ⌊budget / cost⌋) eligible users by
objective, ties by the hash), and for any number of arms when the budget does not bind. Otherwise
the Lagrangian gives a certificate: without capacities, OPT ≤ Σ_{x_μ} (objective − μ · cost) + μ ·
budget for the selection x_μ at price μ (``Allocation.upper_bound``); the plan's objective is at
most that much below the optimum. With capacities no certificate is reported (users displaced from
a full arm get one more chance, in the fill). tests/unit/test_plan_allocate.py checks the gap on
random small cases against scipy's exact MILP solver.

Nothing user-level reaches the driver: the passes return (price, arm, count) rows, the selection
returns per-arm sums.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.plan.contracts import COST, OBJECTIVE, UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG
from ulv_spark.schemas import ARM, AS_OF_DATE, CAMPAIGN_ID, MODEL_VERSION, USER_ID

ELIGIBLE = "eligible"
TIE = "_tie"                # xxhash64(user_id): the deterministic tie-breaker between users
ARM_INDEX = "_arm_index"    # 1-based position of the arm in the sorted arm list
ADJUSTED = "_adjusted"      # objective - price * cost
OPTIONS = "_options"        # per user: array<struct<objective, cost, arm_index>> of eligible arms
CANDIDATE_COLUMNS = (USER_ID, AS_OF_DATE, CAMPAIGN_ID, ARM, UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG, COST,
                     OBJECTIVE, ELIGIBLE, MODEL_VERSION)


def cost_column(arm_costs: Mapping[str, float]) -> Column:
    """Cost of sending the row's arm: ``arm_costs[arm]``, 0 for an arm not listed (as score's expected_profit)."""
    cost = F.lit(0.0)
    for arm, value in sorted(arm_costs.items()):
        cost = F.when(F.col(ARM) == F.lit(arm), F.lit(float(value))).otherwise(cost)
    return cost


def plan_candidates(uplift: DataFrame, *, margin: float, arm_costs: Mapping[str, float], short_term_weight: float,
                    min_roi: float) -> DataFrame:
    """Every (user, arm) of promo_uplift with its cost, objective and eligibility.

    Grain: one row per (user_id, arm) of `uplift` (one date). Columns: CANDIDATE_COLUMNS;
    uplift_value_long is null when `uplift` has no such column (the objective then uses
    uplift_value for both terms), and a null long-term value counts as the short-term one.

    Args:
        uplift: promo_uplift rows of one as_of_date.
        margin: share of incremental spend that is profit (score.margin).
        arm_costs: arm -> cost of sending it (score.arm_costs; missing = 0).
        short_term_weight: λ in [0, 1].
        min_roi: eligible only when objective >= min_roi * cost (and objective > 0).
    """
    has_long = UPLIFT_VALUE_LONG in uplift.columns
    long = F.col(UPLIFT_VALUE_LONG).cast("double") if has_long else F.lit(None).cast("double")
    lam = float(short_term_weight)
    blended = F.lit(lam) * F.col(UPLIFT_VALUE) + F.lit(1.0 - lam) * F.coalesce(long, F.col(UPLIFT_VALUE))
    with_cost = uplift.select("*", cost_column(arm_costs).alias(COST))
    objective = blended * F.lit(float(margin)) - F.col(COST)
    scored = with_cost.select("*", objective.alias(OBJECTIVE), long.alias("_long"))
    pays_off = (F.col(OBJECTIVE) > 0) & (F.col(OBJECTIVE) >= F.lit(float(min_roi)) * F.col(COST))
    return scored.select(USER_ID, AS_OF_DATE, CAMPAIGN_ID, ARM, UPLIFT_CONVERSION, UPLIFT_VALUE,
                         F.col("_long").alias(UPLIFT_VALUE_LONG), COST, OBJECTIVE, pays_off.alias(ELIGIBLE),
                         MODEL_VERSION)


def _arm_index(arms: Sequence[str]) -> Column:
    return F.array_position(F.array(*[F.lit(a) for a in arms]), F.col(ARM)).cast("int")


def user_options(candidates: DataFrame, *, arms: Sequence[str]) -> DataFrame:
    """Grain: one row per user with at least one eligible arm: user_id, _tie, _options.

    _options holds struct(objective, cost, _arm_index) per eligible arm; `arms` (sorted) fixes the index.
    """
    option = F.struct(F.col(OBJECTIVE).alias(OBJECTIVE), F.col(COST).alias(COST), _arm_index(arms).alias(ARM_INDEX))
    grouped = candidates.filter(F.col(ELIGIBLE)).groupBy(USER_ID).agg(F.collect_list(option).alias(OPTIONS))
    return grouped.select(USER_ID, F.xxhash64(USER_ID).alias(TIE), OPTIONS)


def best_option(options: Column, price: Column, allowed: Optional[Sequence[int]] = None) -> Column:
    """struct(_adjusted, neg index, cost, objective) of the option with the highest objective − price · cost.

    Ties go to the lower arm index (the arm first by name); `allowed` restricts the arm indices.
    Null when there is no option; the caller checks _adjusted > 0.
    """
    if allowed is not None:
        keep = F.array(*[F.lit(int(i)) for i in allowed]) if allowed else F.array().cast("array<int>")
        options = F.filter(options, lambda o: F.array_contains(keep, o[ARM_INDEX]))
    scored = F.transform(options, lambda o: F.struct(
        (o[OBJECTIVE] - price * o[COST]).alias(ADJUSTED), (-o[ARM_INDEX]).alias("_neg_index"),
        o[COST].alias(COST), o[OBJECTIVE].alias(OBJECTIVE)))
    return F.array_max(scored)


def _chosen_index(best: Column) -> Column:
    return F.when(best[ADJUSTED] > 0, -best["_neg_index"])


def price_counts(options: DataFrame, prices: Sequence[float]) -> DataFrame:
    """Grain: one row per (price_index, _arm_index) with users > 0: how many users prefer the arm at the price.

    One aggregation over users evaluates every price of `prices` (each user's preferred arm per price).
    """
    grid = F.array(*[F.lit(float(p)) for p in prices])
    choices = F.transform(grid, lambda p: _chosen_index(best_option(F.col(OPTIONS), p)))
    exploded = options.select(F.posexplode(choices).alias("price_index", ARM_INDEX))
    return exploded.filter(F.col(ARM_INDEX).isNotNull()).groupBy("price_index", ARM_INDEX).agg(
        F.count(F.lit(1)).alias("users"))


def choose(options: DataFrame, price: float, allowed: Optional[Sequence[int]] = None) -> DataFrame:
    """Each user's preferred arm at `price`: user_id, _tie, _arm_index, _adjusted, cost, objective (adjusted > 0)."""
    best = best_option(F.col(OPTIONS), F.lit(float(price)), allowed).alias("_best")
    picked = options.select(USER_ID, TIE, best)
    return picked.filter(F.col("_best")[ADJUSTED] > 0).select(
        USER_ID, TIE, (-F.col("_best")["_neg_index"]).alias(ARM_INDEX), F.col("_best")[ADJUSTED].alias(ADJUSTED),
        F.col("_best")[COST].alias(COST), F.col("_best")[OBJECTIVE].alias(OBJECTIVE))


def _rank_order() -> list[Column]:
    return [F.col(ADJUSTED).desc(), F.col(TIE).asc(), F.col(USER_ID).asc()]


def within_capacity(chosen: DataFrame, capacities: Mapping[int, int]) -> DataFrame:
    """Keep, per arm index with a capacity, the first capacity[arm] users by (adjusted desc, tie, user_id).

    A rank window per arm; arms without a capacity keep every user (no window when none has one).
    """
    if not capacities:
        return chosen
    window = Window.partitionBy(ARM_INDEX).orderBy(*_rank_order()).rowsBetween(Window.unboundedPreceding,
                                                                                Window.currentRow)
    cap = F.lit(None).cast("bigint")
    for index, limit in sorted(capacities.items()):
        cap = F.when(F.col(ARM_INDEX) == F.lit(index), F.lit(int(limit))).otherwise(cap)
    ranked = chosen.select("*", F.row_number().over(window).alias("_rank"), cap.alias("_cap"))
    keep = F.col("_cap").isNull() | (F.col("_rank") <= F.col("_cap"))
    return ranked.filter(keep).select(*chosen.columns)


def within_budget(chosen: DataFrame, budget: float, cost: str = COST) -> DataFrame:
    """Keep the rows, in rank order (adjusted desc, tie, user_id), while their running `cost` fits `budget`.

    One window without partition: only ever applied to the fill set (the users at the price's threshold).
    """
    window = Window.orderBy(*_rank_order()).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    running = chosen.select("*", F.sum(cost).over(window).alias("_running_cost"))
    return running.filter(F.col("_running_cost") <= F.lit(float(budget))).select(*chosen.columns)


def marginal_moves(options: DataFrame, kept: DataFrame, *, price: float, allowed: Sequence[int]) -> DataFrame:
    """Users whose preferred arm at the lower `price` (among `allowed`) is not what `kept` sends them.

    Grain: one row per such user: the arm at `price` (new users and switches to a dearer arm),
    with _extra_cost / _extra_objective = its cost / objective minus those of the arm kept (0 if none).
    Only moves that add objective are listed. Columns: choose()'s plus _extra_cost, _extra_objective.
    """
    lower = choose(options, price, allowed)
    now = kept.select(USER_ID, F.col(ARM_INDEX).alias("_kept_arm"), F.col(COST).alias("_kept_cost"),
                      F.col(OBJECTIVE).alias("_kept_objective"))
    joined = lower.join(now, on=USER_ID, how="left")
    moved = F.col("_kept_arm").isNull() | (F.col("_kept_arm") != F.col(ARM_INDEX))
    extra_objective = F.col(OBJECTIVE) - F.coalesce(F.col("_kept_objective"), F.lit(0.0))
    extra_cost = F.col(COST) - F.coalesce(F.col("_kept_cost"), F.lit(0.0))
    return joined.filter(moved).select(*lower.columns, extra_cost.alias("_extra_cost"),
                                       extra_objective.alias("_extra_objective")).filter(
        F.col("_extra_objective") > 0)


def spend(counts: Mapping[int, int], costs: Mapping[int, float], capacities: Mapping[int, int]) -> float:
    """Budget used when `counts[arm]` users prefer each arm and capacities cut them: Σ cost · min(n, cap)."""
    return float(sum(costs[a] * min(n, capacities.get(a, n)) for a, n in counts.items()))


@dataclass
class PriceSearch:
    """Where the passes ended: `price` fits the budget, `price_low` (None: price is 0) does not."""

    price: float
    price_low: Optional[float]
    spend: float
    passes: int
    prices_evaluated: int
    history: list = field(default_factory=list)  # (price, spend) of every price evaluated


def find_price(evaluate, *, budget: Optional[float], price_high: float, passes: int, prices_per_pass: int,
               costs: Mapping[int, float], capacities: Mapping[int, int]) -> PriceSearch:
    """The smallest price (to the grid's resolution) whose capped spend fits `budget`.

    Args:
        evaluate: prices -> one {arm_index: users} per price (one aggregation over users).
        budget: None = no limit (price 0).
        price_high: a price at which no arm with a cost is preferred (spend 0).
    """
    def spends(prices):
        return [spend(c, costs, capacities) for c in evaluate(prices)]

    if budget is None or price_high <= 0:  # no limit, or no arm costs anything: nothing to price
        return PriceSearch(0.0, None, math.nan, 0, 0)
    grid = [price_high * k / (prices_per_pass - 1) for k in range(prices_per_pass)]
    used = spends(grid)
    history = list(zip(grid, used))
    if used[0] <= budget:
        return PriceSearch(0.0, None, used[0], 1, len(grid), history)
    j = next((k for k in range(1, len(grid)) if used[k] <= budget), len(grid) - 1)
    low, high, high_spend = grid[j - 1], grid[j], used[j]
    done = 1
    for _ in range(passes - 1):
        if high - low <= 1e-12 * max(1.0, high):
            break
        inner = [low + (high - low) * k / (prices_per_pass + 1) for k in range(1, prices_per_pass + 1)]
        used = spends(inner)
        history += list(zip(inner, used))
        done += 1
        fits = [k for k, s in enumerate(used) if s <= budget]
        if fits:
            k = fits[0]
            low, high, high_spend = (inner[k - 1] if k else low), inner[k], used[k]
        else:
            low = inner[-1]
    return PriceSearch(high, low, high_spend, done, len(history), history)


@dataclass
class Allocation:
    """The plan (one row per user sent, candidate columns) and how it was found."""

    plan: DataFrame
    info: dict
    upper_bound: Optional[float] = None  # Lagrangian bound on the optimum (no capacities); None otherwise
    cached: Optional[DataFrame] = None   # the persisted per-user options behind `plan`

    def release(self) -> None:
        """Unpersist the per-user options (after `plan` has been written)."""
        if self.cached is not None:
            self.cached.unpersist()


def _exact_sum(col: str) -> Column:
    """A double sum added up in decimal: independent of row order, so a re-run decides alike."""
    return F.sum(F.col(col).cast("decimal(24,12)")).cast("double")


def _counts_by_price(options: DataFrame, prices: Sequence[float]) -> list[dict]:
    rows = price_counts(options, prices).collect()  # at most len(prices) * arms rows
    out: list[dict] = [{} for _ in prices]
    for row in rows:
        out[row["price_index"]][row[ARM_INDEX]] = int(row["users"])
    return out


def _sums(selected: DataFrame) -> dict[int, tuple[int, float, float]]:
    """arm index -> (users, cost, objective) of a selection: one aggregation, one row per arm."""
    rows = selected.groupBy(ARM_INDEX).agg(F.count(F.lit(1)).alias("n"), _exact_sum(COST).alias("c"),
                                           _exact_sum(OBJECTIVE).alias("o")).collect()
    return {r[ARM_INDEX]: (int(r["n"]), float(r["c"]), float(r["o"])) for r in rows}


def allocate(candidates: DataFrame, *, arms: Sequence[str], budget: Optional[float],
             capacities: Mapping[str, int], price_passes: int, prices_per_pass: int,
             costs: Mapping[str, float]) -> Allocation:
    """The plan for one date: at most one eligible arm per user, within budget, capacities and ROI.

    Runs a few Spark jobs (the price passes, the selection sums), each an aggregation whose result
    has one row per (price, arm) or per arm; the returned `plan` is lazy (candidate columns of the
    rows sent). The caller should persist `candidates`' source when it is expensive to recompute.

    Args:
        candidates: plan_candidates(...) of one date.
        arms: the arms of `candidates`, sorted (their index is their position + 1).
        budget: most total cost; None = unlimited.
        capacities: arm -> most users; arms not listed are unlimited.
        costs: arm -> cost (the same as in plan_candidates).
    """
    arms = list(arms)
    index = {arm: i + 1 for i, arm in enumerate(arms)}
    cost_of = {index[a]: float(costs.get(a, 0.0)) for a in arms}
    caps = {index[a]: int(n) for a, n in capacities.items() if a in index}
    # the passes read the per-user options several times: computed once (release() frees them)
    options = user_options(candidates, arms=arms).persist(StorageLevel.MEMORY_AND_DISK)
    ratio = candidates.filter(F.col(ELIGIBLE) & (F.col(COST) > 0)).agg(F.max(F.col(OBJECTIVE) / F.col(COST))).first()[0]
    price_high = 2.0 * float(ratio) + 1.0 if ratio is not None else 0.0
    search = find_price(lambda prices: _counts_by_price(options, prices), budget=budget, price_high=price_high,
                        passes=price_passes, prices_per_pass=prices_per_pass, costs=cost_of, capacities=caps)
    kept = within_capacity(choose(options, search.price), caps)
    kept_sums = _sums(kept)
    kept_users = {a: v[0] for a, v in kept_sums.items()}
    kept_cost = sum(v[1] for v in kept_sums.values())
    kept_objective = sum(v[2] for v in kept_sums.values())
    capped = any(kept_users.get(a, 0) >= n for a, n in caps.items())
    room = {a: caps[a] - kept_users.get(a, 0) for a in caps}
    left = None if budget is None else budget - kept_cost
    open_arms = [a for a in cost_of if room.get(a, 1) > 0]
    selected = kept
    if (search.price_low is not None or capped) and open_arms and (left is None or left > 0):
        price = search.price_low if search.price_low is not None else search.price
        fill = within_capacity(marginal_moves(options, kept, price=price, allowed=open_arms), room)
        if left is not None and (fill.agg(_exact_sum("_extra_cost")).first()[0] or 0.0) > left:
            fill = within_budget(fill, left, cost="_extra_cost")
        fill = fill.select(USER_ID, TIE, ARM_INDEX, ADJUSTED, COST, OBJECTIVE)
        selected = kept.join(fill.select(USER_ID), on=USER_ID, how="left_anti").unionByName(fill)
    sums = _sums(selected) if selected is not kept else kept_sums
    total_cost = sum(v[1] for v in sums.values())
    total_objective = sum(v[2] for v in sums.values())
    filled = sum(v[0] for v in sums.values()) - sum(kept_users.values())
    bound = None
    if budget is not None and not caps:
        bound = kept_objective + search.price * (budget - kept_cost)
    elif budget is None and not caps:
        bound = kept_objective  # every user's best eligible arm: the optimum itself
    picked = selected.select(USER_ID, F.element_at(F.array(*[F.lit(a) for a in arms]), F.col(ARM_INDEX)).alias(ARM))
    plan = candidates.join(picked, on=[USER_ID, ARM], how="inner").select(*CANDIDATE_COLUMNS)
    info = {"price": search.price, "price_low": search.price_low, "price_passes": search.passes,
            "prices_evaluated": search.prices_evaluated, "users": sum(s[0] for s in sums.values()),
            "users_filled": filled, "cost": total_cost, "objective": total_objective, "budget": budget,
            "users_by_arm": {arms[a - 1]: s[0] for a, s in sorted(sums.items())},
            "capacity_reached": sorted(arms[a - 1] for a, n in caps.items() if sums.get(a, (0,))[0] >= n),
            "upper_bound": bound}
    return Allocation(plan, info, bound, options)


def best_arm_for_everyone(candidates: DataFrame) -> DataFrame:
    """'Send to everyone': every user gets the arm with the highest objective (ties: arm by name), eligible or not.

    Grain: one row per user of `candidates`; candidate columns.
    """
    window = Window.partitionBy(USER_ID).orderBy(F.col(OBJECTIVE).desc(), F.col(ARM).asc()).rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    ranked = candidates.select("*", F.row_number().over(window).alias("_rank"))
    return ranked.filter(F.col("_rank") == 1).select(*CANDIDATE_COLUMNS)
