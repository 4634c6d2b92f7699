"""Off-policy value of a targeting policy on randomised exposures: IPW and doubly robust (numpy only).

Setting: the exposed users of one evaluation origin were assigned an arm at random (the control
arm = no promotion) with known probabilities p(a) — the assignment shares of the exposure table
per arm, or given ones (``evaluate.policy_propensities``). A *policy* gives each user a
distribution over the arms, an (n, K) matrix ``target`` whose rows sum to 1: a deterministic
policy (user -> arm, or none = control) is one-hot, "random at the same budget" spreads the same
per-arm counts uniformly over the users. With y the observed outcome and a the logged arm:

* IPW:  V̂ = mean_u  target[u, a_u] · y_u / p(a_u)
* DR:   V̂ = mean_u  [ Σ_k target[u, k] · μ(u, k) + target[u, a_u] · (y_u − μ(u, a_u)) / p(a_u) ]

μ(u, k) is an outcome model (the direct-method part): any μ keeps DR unbiased when p is right,
and a good μ shrinks its variance; with μ = 0 DR is IPW. The *gain* of a policy is its value
minus that of send-none, estimated with the same terms (so the difference is paired). Intervals:
percentiles of the estimate over paired bootstrap resamples of the users (bootstrap.py's resample
matrix: every policy is measured on the same resampled users).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from ulv_spark.evaluate import bootstrap as B

ESTIMATORS = ("ipw", "dr")
POLICY_PREFIX = "policy_"
NO_BUDGET = "none"
_METRIC_RE = re.compile(r"^policy_(ipw|dr|ipw_gain|dr_gain|true_gain|dr_profit|true_profit)_(value|value_long)(_lo|_hi)?"
                        r"(?:\[budget=([^\]]+)\])?$")


def is_policy_metric(metric: str) -> bool:
    """Whether an evaluation_metrics row is an off-policy estimate (policy_* metrics)."""
    return metric.startswith(POLICY_PREFIX)


def policy_metric(quantity: str, outcome: str, stat: str = "", budget: Optional[str] = None) -> str:
    """``policy_<quantity>_<outcome>[_lo|_hi][[budget=<share>]]``, e.g. policy_dr_value_lo[budget=0.25]."""
    name = f"{POLICY_PREFIX}{quantity}_{outcome}{'_' + stat if stat else ''}"
    return name if budget is None else f"{name}[budget={budget}]"


def parse_policy_metric(metric: str) -> Optional[tuple[str, str, str, Optional[str]]]:
    """(quantity, outcome, stat '' | 'lo' | 'hi', budget or None) of a policy metric name, else None."""
    m = _METRIC_RE.match(metric)
    if not m:
        return None
    return m.group(1), m.group(2), (m.group(3) or "").lstrip("_"), m.group(4)


def assignment_shares(logged: Sequence[str]) -> dict[str, float]:
    """arm -> share of the users logged with that arm (the randomisation's empirical propensities)."""
    arms, counts = np.unique(np.asarray(logged, dtype=object).astype(str), return_counts=True)
    total = counts.sum()
    return {str(a): float(c) / total for a, c in zip(arms, counts)}


def logged_propensity(logged: Sequence[str], shares: Mapping[str, float]) -> np.ndarray:
    """(n,) p(a_u): the assignment probability of each user's logged arm; ValueError if one is not positive."""
    names = np.asarray(logged, dtype=object).astype(str)
    missing = sorted(set(names) - {a for a, p in shares.items() if p > 0})
    if missing:
        raise ValueError(f"no positive assignment probability for logged arm(s) {missing}")
    return np.array([float(shares[a]) for a in names], dtype=np.float64)


def one_hot(choice: Sequence[Optional[str]], arms: Sequence[str], *, none_arm: str) -> np.ndarray:
    """(n, K) target of a deterministic policy: 1 at the arm chosen per user (None -> ``none_arm``)."""
    index = {a: k for k, a in enumerate(arms)}
    picked = [none_arm if c is None else str(c) for c in choice]
    unknown = sorted(set(picked) - set(index))
    if unknown:
        raise ValueError(f"policy chooses arm(s) {unknown} outside {list(arms)}")
    out = np.zeros((len(picked), len(arms)), dtype=np.float64)
    out[np.arange(len(picked)), [index[c] for c in picked]] = 1.0
    return out


def spread(counts: Mapping[str, int], n_users: int, arms: Sequence[str], *, none_arm: str) -> np.ndarray:
    """(n, K) target of 'random at the same budget': arm k with probability counts[k] / n, else none_arm."""
    share = np.zeros(len(arms), dtype=np.float64)
    for k, arm in enumerate(arms):
        if arm != none_arm:
            share[k] = counts.get(arm, 0) / n_users if n_users else 0.0
    if share.sum() > 1 + 1e-12:
        raise ValueError(f"counts {dict(counts)} exceed the {n_users} users")
    share[list(arms).index(none_arm)] = max(0.0, 1.0 - share.sum())
    return np.tile(share, (n_users, 1))


def _matched(target: np.ndarray, logged_index: np.ndarray) -> np.ndarray:
    return target[np.arange(target.shape[0]), logged_index]


def ipw_terms(y: np.ndarray, logged_index: np.ndarray, target: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """(n,) per-user IPW terms target[u, a_u] · y_u / p(a_u); their mean is the IPW value."""
    return _matched(target, logged_index) * np.asarray(y, np.float64) / np.asarray(propensity, np.float64)


def dr_terms(y: np.ndarray, logged_index: np.ndarray, target: np.ndarray, propensity: np.ndarray,
             mu: np.ndarray) -> np.ndarray:
    """(n,) per-user doubly robust terms; mu is the (n, K) outcome model μ(u, k)."""
    mu = np.asarray(mu, np.float64)
    residual = np.asarray(y, np.float64) - mu[np.arange(mu.shape[0]), logged_index]
    return (target * mu).sum(axis=1) + _matched(target, logged_index) * residual / np.asarray(propensity, np.float64)


def estimator_terms(estimator: str, y, logged_index, target, propensity, mu=None) -> np.ndarray:
    """The per-user terms of ``estimator`` ('ipw' or 'dr'; dr needs mu)."""
    if estimator == "ipw":
        return ipw_terms(y, logged_index, target, propensity)
    if estimator == "dr":
        if mu is None:
            raise ValueError("the doubly robust estimator needs an outcome model mu")
        return dr_terms(y, logged_index, target, propensity, mu)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def bootstrap_means(terms: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, m) means of each column of the (n, m) terms over the paired resamples of the n users."""
    terms = np.asarray(terms, np.float64)
    n = terms.shape[0]
    blocks = [B.resample_counts(index, n) @ terms / n for index in B.resample_index(n, resamples, seed)]
    return np.vstack(blocks) if blocks else np.empty((0, terms.shape[1]))


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float


def estimate(terms: np.ndarray, samples: Optional[np.ndarray], level: float = 0.95) -> Estimate:
    """The mean of the terms and the central ``level`` percentile interval of its bootstrap samples."""
    value = float(np.mean(terms)) if len(terms) else float("nan")
    if samples is None or not len(samples):
        return Estimate(value, float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return Estimate(value, float(lo), float(hi))


def mean_cost(target: np.ndarray, arm_cost: np.ndarray) -> float:
    """Mean arm cost per user of a policy: mean_u Σ_k target[u, k] · cost[k] (cost 0 for the none arm)."""
    return float(np.mean(np.asarray(target, np.float64) @ np.asarray(arm_cost, np.float64)))


def profit(gain: float, margin: float, cost: float) -> float:
    """Profit per user over send-none: margin · gain − cost (monotone in the gain, so its interval maps too)."""
    return margin * gain - cost


def true_gain(target: np.ndarray, true_uplift: np.ndarray) -> float:
    """The true mean gain over send-none: mean_u Σ_k target[u, k] · τ(u, k) (τ = 0 for the none arm)."""
    return float(np.mean((np.asarray(target) * np.asarray(true_uplift, np.float64)).sum(axis=1)))
