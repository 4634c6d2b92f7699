"""Policy evaluation in the backtest: the plan's targeting policy, valued off-policy on randomised exposures.

For each split with campaign exposures at the evaluation origin, the exposed test users (every
arm, the control included) are the logged data. Policies evaluated on them (policy.py's IPW and
doubly robust estimators, paired bootstrap intervals over the users):

* ``model`` / ``two_model_gbm`` / ``oracle``: the product's plan — ``plan/allocate.py``'s
  allocation (plan_candidates + allocate, with score.margin, score.arm_costs, plan.short_term_weight
  and plan.min_roi; no capacities) applied to that method's predicted uplifts of the exposed users,
  at each budget of the curve (oracle: the true uplifts, the ceiling);
* ``model[short_term]`` / ``oracle[short_term]``: the same plan with ``plan.short_term_weight`` = 1
  (the response window's uplift alone), where the plan weighs the long term (weight < 1) and the
  method predicts it: what optimising this month's revenue alone would send;
* ``random``: the model's plan's per-arm counts spread uniformly over the users (same budget in
  expectation);
* ``send_all[<arm>]``: every user that arm; ``send_none``: nobody anything (the control arm).

Budgets: ``evaluate.policy_budget_shares`` × (exposed users × mean cost of the non-control arms),
i.e. a share of what sending everyone an arm costs, plus no budget ("none"). Without arm costs
budgets do not bind, and only "none" is evaluated. Outcomes: the response-window value
(label_response_value) and, where the horizon's labels exist, the long-term value (label_value).

The DR outcome model μ(u, k) = mean outcome of the exposed control users + the uplift the model
predicts for arm k (two_model_gbm when the model did not run; the constant alone when neither did);
the same μ for every policy, so their DR values stay paired. Rows go into evaluation_metrics as
(method = policy, metric = policy_<ipw|dr|ipw_gain|dr_gain|true_gain|dr_profit|true_profit>_<outcome>[_lo|_hi][budget=..]);
profit = score.margin × gain − the policy's mean arm cost per exposed user (score.arm_costs), i.e.
what the plan's objective counts: incremental margin net of what the promotions cost.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ulv_spark.evaluate import policy as P
from ulv_spark.evaluate.backtest import METRIC_COLUMNS, UPLIFT_OUTCOME
from ulv_spark.evaluate.baselines import uplift_column
from ulv_spark.evaluate.methods import true_uplift_column
from ulv_spark.runtime import get_logger
from ulv_spark.schemas import ARM, IS_CONTROL, LABEL_CONVERTED, USER_ID

PLAN_SOURCES = ("model", "two_model_gbm", "oracle")   # methods whose uplifts the plan is made from
OUTCOME_MODEL_SOURCES = ("model", "two_model_gbm")    # the DR direct part, first that ran
OUTCOMES = ("value", "value_long")
RANDOM = "random"
SEND_NONE = "send_none"
SHORT_TERM_SOURCES = ("model", "oracle")              # also planned on the short-term uplift alone


def short_term_name(source: str) -> str:
    return f"{source}[short_term]"


def send_all_name(arm: str) -> str:
    return f"send_all[{arm}]"


def exposed_rows(test: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the test users with a logged campaign arm and an observed response."""
    if ARM not in test.columns or LABEL_CONVERTED not in test.columns:
        return np.zeros(len(test), dtype=bool)
    return (test[ARM].notna() & test[LABEL_CONVERTED].notna()).to_numpy()


def budget_points(arms: Sequence[str], control: str, arm_costs, n_users: int,
                  shares: Sequence[float]) -> list[tuple[str, Optional[float]]]:
    """(tag, budget) of the curve: each share of n_users × mean non-control arm cost, then ('none', None)."""
    costs = [float(arm_costs.get(a, 0.0)) for a in arms if a != control]
    unit = n_users * (sum(costs) / len(costs)) if costs else 0.0
    points = [(f"{s:g}", s * unit) for s in shares] if unit > 0 else []
    return points + [(P.NO_BUDGET, None)]


def uplift_frame(users: pd.DataFrame, pred: pd.DataFrame, arms: Sequence[str], *, as_of, source: str) -> pd.DataFrame:
    """promo_uplift-shaped rows (one per user and non-control arm) from a method's aligned predictions."""
    parts = []
    for arm in arms:
        value = uplift_column("value", arm)
        if value not in pred.columns:
            continue
        conv, long = uplift_column("conversion", arm), uplift_column("value_long", arm)
        parts.append(pd.DataFrame({
            USER_ID: users[USER_ID].astype(str).to_numpy(), "as_of_date": as_of, "campaign_id": "backtest",
            ARM: arm, "uplift_conversion": pred[conv].astype(float).to_numpy() if conv in pred else 0.0,
            "uplift_value": pred[value].astype(float).to_numpy(),
            "uplift_value_long": pred[long].astype(float).to_numpy() if long in pred else np.nan,
            "model_version": source}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plan_choices(spark, uplift: pd.DataFrame, user_ids: Sequence[str], *, budget: Optional[float], cfg,
                 short_term_weight: Optional[float] = None) -> list:
    """Each user's arm under plan/allocate.py's plan at ``budget`` (None: not sent), in user_ids order.

    ``short_term_weight``: instead of ``plan.short_term_weight`` (1 = the short-term-only plan).
    """
    from ulv_spark.plan.allocate import allocate, plan_candidates

    ddl = ("user_id string, as_of_date date, campaign_id string, arm string, uplift_conversion double, "
           "uplift_value double, uplift_value_long double, model_version string")
    frame = spark.createDataFrame(uplift.astype({"uplift_value_long": object}).where(uplift.notna(), None), ddl)
    candidates = plan_candidates(frame, margin=cfg.score.margin, arm_costs=cfg.score.arm_costs,
                                 short_term_weight=(cfg.plan.short_term_weight if short_term_weight is None
                                                    else short_term_weight), min_roi=cfg.plan.min_roi)
    arms = sorted(uplift[ARM].unique())
    allocation = allocate(candidates, arms=arms, budget=budget, capacities={}, price_passes=cfg.plan.price_passes,
                          prices_per_pass=cfg.plan.prices_per_pass, costs=cfg.score.arm_costs)
    try:
        # documented driver collect: the backtest's exposed test users, already on the driver
        sent = dict(allocation.plan.select(USER_ID, ARM).toPandas().itertuples(index=False, name=None))
    finally:
        allocation.release()
    return [sent.get(str(u)) for u in user_ids]


def split_policy_rows(spark, res, cfg, *, dataset: str, log=None) -> list[dict]:
    """evaluation_metrics rows of every policy on one split (empty when it has no randomised exposures)."""
    log = log or get_logger("ulv_spark.evaluate")
    ev = cfg.evaluate
    rows_mask = exposed_rows(res.test)
    test = res.test[rows_mask].reset_index(drop=True)
    controls = sorted(test.loc[test[IS_CONTROL].fillna(False).astype(bool), ARM].astype(str).unique()) if len(test) else []
    if len(test) < 2 or not controls:
        res.notes.append("policy evaluation: no randomised exposures with a control arm among the test users")
        return []
    control = controls[0]
    logged = test[ARM].astype(str).to_numpy()
    preds = {m: p[rows_mask].reset_index(drop=True) for m, p in res.predictions.items()}
    predicted_arms = {c.split(":", 1)[1] for p in preds.values() for c in p.columns if c.startswith("uplift_value:")}
    arms = [control] + sorted((set(logged) | predicted_arms) - {control})
    shares = dict(ev.policy_propensities) or P.assignment_shares(logged)
    try:
        propensity = P.logged_propensity(logged, shares)
    except ValueError as exc:
        raise ValueError(f"evaluate.policy_propensities: {exc} on {res.split.name}") from None
    logged_index = np.array([arms.index(a) for a in logged])
    n = len(test)
    outcomes = [k for k in OUTCOMES if UPLIFT_OUTCOME[k] in test.columns and test[UPLIFT_OUTCOME[k]].notna().any()]
    y = {k: test[UPLIFT_OUTCOME[k]].astype(float).fillna(0.0).to_numpy() for k in outcomes}
    is_control = logged == control
    mu_source = next((m for m in OUTCOME_MODEL_SOURCES if m in preds), None)
    mu = {}
    for k in outcomes:
        base = np.full((n, len(arms)), float(y[k][is_control].mean()))
        for j, arm in enumerate(arms[1:], start=1):
            col = uplift_column(k, arm)
            if mu_source and col in preds[mu_source].columns:
                base[:, j] += preds[mu_source][col].astype(float).to_numpy()
        mu[k] = base

    policies: list[tuple[str, Optional[str], np.ndarray]] = [(SEND_NONE, None, P.one_hot([None] * n, arms,
                                                                                          none_arm=control))]
    policies += [(send_all_name(a), None, P.one_hot([a] * n, arms, none_arm=control)) for a in arms[1:]]
    budgets = budget_points(arms, control, cfg.score.arm_costs, n, ev.policy_budget_shares)
    user_ids = test[USER_ID].astype(str).tolist()
    for source in [m for m in PLAN_SOURCES if m in preds]:
        uplift = uplift_frame(test, preds[source], arms[1:], as_of=res.split.origin, source=source)
        if uplift.empty:
            continue
        short_too = (source in SHORT_TERM_SOURCES and cfg.plan.short_term_weight < 1.0
                     and uplift["uplift_value_long"].notna().any())
        for tag, budget in budgets:
            choice = P.one_hot(plan_choices(spark, uplift, user_ids, budget=budget, cfg=cfg), arms, none_arm=control)
            policies.append((source, tag, choice))
            if short_too:
                short = plan_choices(spark, uplift, user_ids, budget=budget, cfg=cfg, short_term_weight=1.0)
                policies.append((short_term_name(source), tag, P.one_hot(short, arms, none_arm=control)))
            if source == "model":
                counts = {a: int(choice[:, j].sum()) for j, a in enumerate(arms)}
                policies.append((RANDOM, tag, P.spread(counts, n, arms, none_arm=control)))

    columns, names = [], []
    for method, tag, target in policies:
        for k in outcomes:
            for est in P.ESTIMATORS:
                columns.append(P.estimator_terms(est, y[k], logged_index, target, propensity, mu[k]))
                names.append((method, tag, k, est))
    terms = np.column_stack(columns)
    none_at = {(k, est): names.index((SEND_NONE, None, k, est)) for k in outcomes for est in P.ESTIMATORS}
    gains = terms - terms[:, [none_at[(k, est)] for (_, _, k, est) in names]]
    both = np.hstack([terms, gains])
    samples = (P.bootstrap_means(both, resamples=ev.bootstrap_resamples, seed=ev.bootstrap_seed)
               if ev.bootstrap_resamples else None)
    out: list[dict] = []

    def add(method, metric, value):
        if np.isfinite(value):
            out.append({"dataset": dataset, "split": res.split.name, "method": method, "metric": metric,
                        "value": float(value)})

    margin = float(cfg.score.margin)
    arm_cost = np.array([0.0] + [float(cfg.score.arm_costs.get(a, 0.0)) for a in arms[1:]])
    costs = {(method, tag): P.mean_cost(target, arm_cost) for method, tag, target in policies}
    width = terms.shape[1]
    for i, (method, tag, k, est) in enumerate(names):
        for quantity, column in ((est, i), (f"{est}_gain", width + i)):
            got = P.estimate(both[:, column], None if samples is None else samples[:, column])
            add(method, P.policy_metric(quantity, k, budget=tag), got.value)
            add(method, P.policy_metric(quantity, k, "lo", tag), got.lo)
            add(method, P.policy_metric(quantity, k, "hi", tag), got.hi)
            if quantity == "dr_gain":   # add() drops a non-finite bound (no resamples)
                for stat, value in (("", got.value), ("lo", got.lo), ("hi", got.hi)):
                    add(method, P.policy_metric("dr_profit", k, stat, tag), P.profit(value, margin, costs[(method, tag)]))
    for method, tag, target in policies:
        for k in outcomes:
            cols = [true_uplift_column(k, a) for a in arms[1:]]
            if all(c in test.columns for c in cols):
                tau = np.column_stack([np.zeros(n)] + [test[c].astype(float).fillna(0.0).to_numpy() for c in cols])
                gain = P.true_gain(target, tau)
                add(method, P.policy_metric("true_gain", k, budget=tag), gain)
                add(method, P.policy_metric("true_profit", k, budget=tag), P.profit(gain, margin, costs[(method, tag)]))
    log.info("%s: %d policies valued off-policy on %d exposed test users (propensities %s, DR outcome model %s)",
             res.split.name, len(policies), n, {a: round(p, 4) for a, p in shares.items()}, mu_source or "constant")
    return out


def policy_evaluation(spark, result, cfg, log=None) -> pd.DataFrame:
    """Policy rows (METRIC_COLUMNS) of every split of a backtest ``result`` (appended by the caller)."""
    rows: list[dict] = []
    for res in result.splits:
        rows.extend(split_policy_rows(spark, res, cfg, dataset=result.dataset, log=log))
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def truth_coverage(metrics: pd.DataFrame) -> list[dict]:
    """Per (split, policy, budget, outcome, estimator) with a true gain: the estimated gain, its interval,
    the truth, and whether the interval covers it (the synthetic acceptance check)."""
    cells = {}
    for r in metrics.itertuples(index=False):
        parsed = P.parse_policy_metric(r.metric)
        if parsed:
            cells[(r.split, r.method, parsed[3], parsed[1], parsed[0], parsed[2])] = float(r.value)
    out = []
    for (split, method, budget, outcome, quantity, stat), truth in sorted(cells.items(), key=str):
        if quantity != "true_gain" or stat:
            continue
        for est in P.ESTIMATORS:
            key = (split, method, budget, outcome, f"{est}_gain")
            lo, hi, value = cells.get((*key, "lo")), cells.get((*key, "hi")), cells.get((*key, ""))
            if value is None:
                continue
            out.append({"split": split, "policy": method, "budget": budget, "outcome": outcome, "estimator": est,
                        "estimate": value, "lo": lo, "hi": hi, "truth": truth,
                        "covered": None if lo is None or hi is None else bool(lo <= truth <= hi)})
    return out


def policy_headline(metrics: pd.DataFrame, estimator: str = "dr") -> dict:
    """{split: {outcome: {policy or policy@budget: [gain, lo, hi]}}}: the gains over send-none (the job summary)."""
    cells: dict = {}
    for r in metrics.itertuples(index=False):
        parsed = P.parse_policy_metric(r.metric)
        if parsed and parsed[0] == f"{estimator}_gain":
            _, outcome, stat, budget = parsed
            name = r.method if budget is None else f"{r.method}@{budget}"
            slot = cells.setdefault(r.split, {}).setdefault(outcome, {}).setdefault(name, [None, None, None])
            slot[{"": 0, "lo": 1, "hi": 2}[stat]] = round(float(r.value), 4)
    return cells
