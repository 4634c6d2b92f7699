"""Paired bootstrap over test users of the model's margin over every baseline (numpy only).

"The model beats GBM on Gini" is a claim about a sample of users; this module says how sure
it is. One resample draws the split's n test users with replacement; the model and every
other method are scored on the *same* resampled users (paired), and the margin
``goodness(model) - goodness(other)`` is recomputed per resample:

* goodness = the metric for higher-is-better metrics (Gini, Spearman, AUC, PR-AUC, Qini,
  AUUC, uplift@k), minus the metric for decile MAPE and ECE, and ``-|total_ratio - 1|`` for
  the total predicted / actual ratio, so **a positive margin always means the model is
  better**;
* the point margin is the one on the full test set; the interval is the 2.5 / 97.5 %
  percentiles of the resampled margins; ``p_not_better`` is the share of resamples in which
  the model is not better (margin <= 0): about 0 for a clear win, about 0.5 for a tie, 1 for
  identical predictions;
* "best" is the best non-oracle other method per metric, chosen on the full test set.

Vectorised: a block of resamples is a (B, n) matrix of integer counts (how often each user is
drawn) and every metric of ``evaluate.metrics`` is computed as its count-weighted version in
one pass over users sorted once per method (cumulative sums at tie-group boundaries; ranks as
weighted average ranks). On a resample this equals the ``evaluate.metrics`` function applied to
the resampled arrays in user order (``index`` sorted), ties included.

Rows of ``evaluation_metrics`` (method = the model), for each metric M and other method O
(``best[O]`` for the best other one):

* ``margin_vs_<O>:<M>`` the point margin, ``margin_lo_vs_<O>:<M>`` / ``margin_hi_vs_<O>:<M>``
  the 95 % interval, ``p_not_better_vs_<O>:<M>`` the share of resamples with margin <= 0.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

# Direction of a metric name (substring match, as the report's bold "best" marks).
LOWER_IS_BETTER = ("mape", "ece")
CLOSEST_TO_ONE = ("total_ratio",)
# Metrics with a bootstrapped margin: the value / churn metrics and every uplift metric.
BOOTSTRAP_METRICS = ("value_gini", "value_spearman", "value_decile_mape", "value_total_ratio", "churn_auc",
                     "churn_pr_auc", "churn_ece")
BOOTSTRAP_PREFIXES = ("qini_", "auuc_", "uplift_at_k_")
EXCLUDED_METHODS = ("oracle",)
# ablations of the model itself (the network without its tree companion): margins are computed
# against them, but they are never the "best other method" of a headline margin
ABLATION_METHODS = ("model_network",)
BEST = "best"
# stat -> metric-name prefix of its rows
STAT_PREFIX = {"margin": "margin_vs_", "lo": "margin_lo_vs_", "hi": "margin_hi_vs_", "p_not_better": "p_not_better_vs_"}
_MARGIN_RE = re.compile(r"^(margin_vs_|margin_lo_vs_|margin_hi_vs_|p_not_better_vs_)(best\[[^\]]+\]|[^:]+):(.+)$")
MAX_BLOCK_CELLS = 2_000_000  # resamples x users per block: bounds the memory of one block (~16 MB a matrix)


def is_bootstrapped(metric: str) -> bool:
    """True for the metrics whose margins are bootstrapped (not share-of-oracle, not truth metrics)."""
    if metric.endswith("_share_of_oracle") or "_truth_" in metric:
        return False
    return metric in BOOTSTRAP_METRICS or metric.startswith(BOOTSTRAP_PREFIXES)


def goodness(metric: str, value: float) -> float:
    """The metric turned higher-is-better: -value for MAPE / ECE, -|value - 1| for total_ratio."""
    if any(k in metric for k in CLOSEST_TO_ONE):
        return -abs(value - 1.0)
    if any(k in metric for k in LOWER_IS_BETTER):
        return -value
    return value


def margin_metric(metric: str, other: str, stat: str = "margin", *, best: bool = False) -> str:
    """Metric name of a margin row, e.g. ``margin_vs_gbm:value_gini`` or ``margin_lo_vs_best[gbm]:qini_value``."""
    if stat not in STAT_PREFIX:
        raise ValueError(f"stat must be one of {list(STAT_PREFIX)}, got {stat!r}")
    return f"{STAT_PREFIX[stat]}{f'{BEST}[{other}]' if best else other}:{metric}"


def parse_margin_metric(name: str) -> Optional[tuple[str, str, str, bool]]:
    """(stat, other method, metric, is_best) of a margin row's metric name; None for any other metric."""
    found = _MARGIN_RE.match(name)
    if not found:
        return None
    prefix, other, metric = found.groups()
    stat = next(s for s, p in STAT_PREFIX.items() if p == prefix)
    best = other.startswith(f"{BEST}[")
    return stat, (other[len(BEST) + 1:-1] if best else other), metric, best


def is_margin_metric(name: str) -> bool:
    return parse_margin_metric(name) is not None


# --------------------------------------------------------------------------------------------
# resamples
# --------------------------------------------------------------------------------------------
def block_size(n_users: int, resamples: int) -> int:
    """Resamples per block so that one (B, n) matrix stays under MAX_BLOCK_CELLS cells."""
    return max(1, min(resamples, MAX_BLOCK_CELLS // max(n_users, 1)))


def resample_index(n_users: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of a seeded (resamples, n_users) index matrix: each row draws n users with replacement.

    The blocks depend only on (n_users, resamples, seed), so a run is reproducible for a seed.
    """
    rng = np.random.default_rng(seed)
    step = block_size(n_users, resamples)
    for start in range(0, resamples, step):
        yield rng.integers(0, n_users, size=(min(step, resamples - start), n_users))


def resample_counts(index: np.ndarray, n_users: int) -> np.ndarray:
    """(B, n) float counts: how many times each user appears in each row of an index matrix."""
    index = np.asarray(index, dtype=np.int64)
    if index.ndim != 2:
        raise ValueError(f"index must be a (resamples, users) matrix, got shape {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= n_users):
        raise ValueError(f"index values must lie in [0, {n_users})")
    b = index.shape[0]
    flat = (index + (np.arange(b, dtype=np.int64) * n_users)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_users).reshape(b, n_users).astype(np.float64)


# --------------------------------------------------------------------------------------------
# count-weighted metrics: w is (B, n) counts, the other arrays are 1-d of length n; (B,) out
# --------------------------------------------------------------------------------------------
def _order_desc(score: np.ndarray) -> np.ndarray:
    return np.argsort(-score, kind="mergesort")


def _group_ends(sorted_score: np.ndarray) -> np.ndarray:
    return np.r_[np.flatnonzero(np.diff(sorted_score)), sorted_score.size - 1]


def _at(a: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Columns ``ends`` of ``a`` (a copy-free no-op when every user is its own tie group)."""
    return a if ends.size == a.shape[1] else a[:, ends]


def _trapezoid_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0, axis=1)


def _with_zero(a: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((a.shape[0], 1)), a], axis=1)


def _div(a, b, fill: float = np.nan) -> np.ndarray:
    """a / b elementwise (broadcast), ``fill`` where b is 0."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.full(a.shape, fill)
    np.divide(a, b, out=out, where=b != 0)
    return out


def weighted_gini(w: np.ndarray, actual: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Gini of ``actual`` ranked by ``score`` per row of weights (NaN where the actual total is <= 0)."""
    order = _order_desc(score)
    ends = _group_ends(score[order])
    ws = w[:, order]
    k = _at(np.cumsum(ws, axis=1), ends)
    a = _at(np.cumsum(ws * actual[order], axis=1), ends)
    n, total = k[:, -1:], a[:, -1:]
    x = _with_zero(_div(k, n))
    y = _with_zero(_div(a, np.where(total > 0, total, 0.0)))
    return np.where(total[:, 0] > 0, 2.0 * (_trapezoid_rows(x, y) - 0.5), np.nan)


def weighted_normalized_gini(w, actual, score, best: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalised Gini per row; ``best`` (the perfect ranking's Gini per row) may be passed in."""
    best = weighted_gini(w, actual, actual) if best is None else best
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(best > 0, weighted_gini(w, actual, score) / np.where(best > 0, best, 1.0), np.nan)


def weighted_ranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(B, n) average ranks (1-based) of every user among the resampled users, ties averaged."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ends = _group_ends(sorted_x)
    group = np.empty(x.size, dtype=np.int64)
    group[order] = np.repeat(np.arange(ends.size), np.diff(np.r_[-1, ends]))
    cum = _at(np.cumsum(w[:, order], axis=1), ends)
    start = _with_zero(cum)[:, :-1]
    avg = start + (cum - start + 1.0) / 2.0
    return avg[:, group]


def _weighted_pearson(w, x, y) -> np.ndarray:
    n = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / n
    my = (w * y).sum(axis=1, keepdims=True) / n
    xc, yc = x - mx, y - my
    sxy, sxx, syy = (w * xc * yc).sum(axis=1), (w * xc * xc).sum(axis=1), (w * yc * yc).sum(axis=1)
    denom = np.sqrt(sxx * syy)
    return _div(sxy, denom)


def weighted_spearman(w, x, y, x_ranks: Optional[np.ndarray] = None) -> np.ndarray:
    """Spearman per row; ``x_ranks`` (the weighted ranks of ``x``) may be passed in."""
    return _weighted_pearson(w, weighted_ranks(w, x) if x_ranks is None else x_ranks, weighted_ranks(w, y))


def weighted_roc_auc(w, y_true, score) -> np.ndarray:
    ranks = weighted_ranks(w, score)
    pos = (w * y_true).sum(axis=1)
    neg = w.sum(axis=1) - pos
    return _div((w * y_true * ranks).sum(axis=1) - pos * (pos + 1) / 2.0, pos * neg)


def weighted_average_precision(w, y_true, score) -> np.ndarray:
    order = _order_desc(score)
    ends = _group_ends(score[order])
    ws = w[:, order]
    tp = _at(np.cumsum(ws * y_true[order], axis=1), ends)
    k = _at(np.cumsum(ws, axis=1), ends)
    precision = _div(tp, k, 0.0)
    n_pos = tp[:, -1:]
    recall = _with_zero(_div(tp, n_pos))
    return np.where(n_pos[:, 0] > 0, np.sum(np.diff(recall, axis=1) * precision, axis=1), np.nan)


def weighted_ece(w, y_true, prob, n_bins: int = 10) -> np.ndarray:
    idx = np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)
    onehot = np.zeros((prob.size, n_bins))
    onehot[np.arange(prob.size), idx] = 1.0
    gap = np.abs((w * y_true) @ onehot - (w * prob) @ onehot).sum(axis=1)
    return _div(gap, w.sum(axis=1))


def weighted_total_ratio(w, actual, predicted) -> np.ndarray:
    total = (w * actual).sum(axis=1)
    return np.where(total > 0, _div((w * predicted).sum(axis=1), total), np.nan)


def _top_sums(cw: np.ndarray, cum: Sequence[np.ndarray], values: Sequence[np.ndarray], positions: np.ndarray):
    """Sums over the first ``positions`` resampled users in sorted order, splitting a user's copies.

    ``cw`` (B, n) cumulative counts in sorted order, ``cum`` cumulative weighted values, ``values``
    the per-user values in sorted order; ``positions`` (B, K) counts of users to take.
    """
    b, n = cw.shape
    span = float(cw[:, -1].max()) + 1.0
    offset = (np.arange(b) * span)[:, None]
    u = np.searchsorted((cw + offset).ravel(), (positions + offset).ravel(), side="left").reshape(positions.shape)
    u = np.minimum(u - (np.arange(b) * n)[:, None], n - 1)
    rows = np.broadcast_to(np.arange(b)[:, None], u.shape)
    prev = u - 1
    cw_prev = np.where(prev >= 0, cw[rows, np.maximum(prev, 0)], 0.0)
    partial = positions - cw_prev
    out = []
    for c, v in zip(cum, values):
        c_prev = np.where(prev >= 0, c[rows, np.maximum(prev, 0)], 0.0)
        out.append(c_prev + partial * v[u])
    return out


def weighted_decile_mape(w, actual, predicted, n_bins: int = 10) -> np.ndarray:
    order = _order_desc(predicted)
    ws = w[:, order]
    a_s, p_s = actual[order], predicted[order]
    cw = np.cumsum(ws, axis=1)
    n = cw[:, -1]
    q, r = np.floor_divide(n, n_bins), np.mod(n, n_bins)
    j = np.arange(n_bins + 1)[None, :]
    bounds = j * q[:, None] + np.minimum(j, r[:, None])
    f_a, f_p = _top_sums(cw, [np.cumsum(ws * a_s, axis=1), np.cumsum(ws * p_s, axis=1)], [a_s, p_s], bounds)
    act_tot, pred_tot = np.diff(f_a, axis=1), np.diff(f_p, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.where(act_tot != 0, np.abs(pred_tot - act_tot) / np.abs(np.where(act_tot != 0, act_tot, 1.0)),
                       np.nan)
    filled = np.isfinite(ape).sum(axis=1)
    mape = np.where(filled > 0, np.nansum(ape, axis=1) / np.maximum(filled, 1), np.nan)
    return np.where(n >= n_bins, mape, np.nan)


def weighted_uplift(w, outcome, treated, score, k: float = 0.3) -> dict[str, np.ndarray]:
    """Qini coefficient, AUUC and uplift@k per row, from one sort of the users (see evaluate.metrics)."""
    order = _order_desc(score)
    ends = _group_ends(score[order])
    ws = w[:, order]
    t, y = treated[order], outcome[order]
    cw = np.cumsum(ws, axis=1)
    c_nt = np.cumsum(ws * t, axis=1)
    c_yt = np.cumsum(ws * (y * t), axis=1)
    c_y = np.cumsum(ws * y, axis=1)
    kk, nt, yt = _at(cw, ends), _at(c_nt, ends), _at(c_yt, ends)
    nc, yc = kk - nt, _at(c_y, ends) - yt
    n, n_t = kk[:, -1:], nt[:, -1:]
    ok = (n_t[:, 0] > 0) & (n_t[:, 0] < n[:, 0])
    share = _div(kk, n)
    x = _with_zero(share)
    qini_y = _with_zero(_div(yt - _div(yc * nt, nc, 0.0), n_t))
    qini = np.where(ok, _trapezoid_rows(x, qini_y) - qini_y[:, -1] / 2.0, np.nan)
    diff = np.where((nt > 0) & (nc > 0), _div(yt, nt, 0.0) - _div(yc, nc, 0.0), 0.0)
    auuc = np.where(ok, _trapezoid_rows(x, _with_zero(diff * share)), np.nan)
    top = np.ceil(k * cw[:, -1])[:, None]
    top_nt, top_yt, top_y = (v[:, 0] for v in _top_sums(cw, [c_nt, c_yt, c_y], [t, y * t, y], top))
    top_nc = top[:, 0] - top_nt
    at_k = np.where((top_nt > 0) & (top_nc > 0), _div(top_yt, top_nt) - _div(top_y - top_yt, top_nc), np.nan)
    return {"qini": qini, "auuc": auuc, "uplift_at_k": at_k}


def weighted_qini(w, outcome, treated, score) -> np.ndarray:
    return weighted_uplift(w, outcome, treated, score)["qini"]


def weighted_auuc(w, outcome, treated, score) -> np.ndarray:
    return weighted_uplift(w, outcome, treated, score)["auuc"]


def weighted_uplift_at_k(w, outcome, treated, score, k: float = 0.3) -> np.ndarray:
    return weighted_uplift(w, outcome, treated, score, k)["uplift_at_k"]


# --------------------------------------------------------------------------------------------
# margins
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Margin:
    """The model's margin over one other method on one metric (positive = the model is better)."""

    metric: str
    other: str
    model_value: float
    other_value: float
    margin: float
    lo: float
    hi: float
    p_not_better: float
    resamples: int          # resamples in which both metrics are defined
    best: bool = False      # ``other`` is the best non-oracle other method on this metric

    def rows(self) -> list[tuple[str, float]]:
        """(metric name, value) rows of evaluation_metrics for this margin."""
        stats = {"margin": self.margin, "lo": self.lo, "hi": self.hi, "p_not_better": self.p_not_better}
        return [(margin_metric(self.metric, self.other, s, best=self.best), v) for s, v in stats.items()]


def summarize(metric: str, other: str, model_value: float, other_value: float, samples: np.ndarray,
              *, best: bool = False) -> Optional[Margin]:
    """A Margin from the full-set values and the resampled margins (NaN resamples left out)."""
    d = np.asarray(samples, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    point = goodness(metric, model_value) - goodness(metric, other_value)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return Margin(metric, other, float(model_value), float(other_value), float(point), float(lo), float(hi),
                  float((d <= 0).mean()), int(d.size), best)


def best_other(metric: str, values: Mapping[str, float]) -> Optional[str]:
    """The method with the best value of ``metric`` (first in order on a tie); None when empty."""
    usable = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
    if not usable:
        return None
    return max(usable, key=lambda m: goodness(metric, usable[m]))


def paired_margins(full: Mapping[str, Mapping[str, float]], samples_of, n_users: int, *, reference: str = "model",
                   resamples: int = 200, seed: int = 0, index: Optional[np.ndarray] = None) -> list[Margin]:
    """Margins of ``reference`` over every other (non-oracle) method, per bootstrapped metric.

    Args:
        full: method -> {metric: value on the full test set} (the backtest's metrics).
        samples_of: ``(method, counts) -> {metric: (B,) values}`` for a (B, n) counts block.
        n_users: test users n.
        resamples, seed: the seeded resample matrix (ignored when ``index`` is given).
        index: an explicit (B, n) index matrix (tests).

    Returns:
        A Margin per (metric, other method) with resamples, then one ``best=True`` copy per
        metric for the best other method on the full test set.
    """
    if reference not in full:
        return []
    others = [m for m in full if m != reference and m not in EXCLUDED_METHODS]
    wanted = {m: [k for k in full[m] if k in full[reference] and is_bootstrapped(k)] for m in others}
    wanted = {m: ks for m, ks in wanted.items() if ks}
    if not wanted:
        return []
    blocks = ([np.asarray(index)] if index is not None else resample_index(n_users, resamples, seed))
    diffs: dict[tuple[str, str], list[np.ndarray]] = {(m, k): [] for m, ks in wanted.items() for k in ks}
    for block in blocks:
        w = resample_counts(block, n_users)
        mine = samples_of(reference, w)
        for m, ks in wanted.items():
            theirs = samples_of(m, w)
            for k in ks:
                if k in mine and k in theirs:
                    diffs[(m, k)].append(goodness(k, mine[k]) - goodness(k, theirs[k]))
    out = []
    for (m, k), parts in diffs.items():
        margin = summarize(k, m, full[reference][k], full[m][k], np.concatenate(parts) if parts else np.array([]))
        if margin is not None:
            out.append(margin)
    by_metric: dict[str, dict[str, Margin]] = {}
    for margin in out:
        by_metric.setdefault(margin.metric, {})[margin.other] = margin
    for metric, per_other in by_metric.items():
        top = best_other(metric, {m: full[m][metric] for m in others
                                  if metric in full[m] and m not in ABLATION_METHODS})
        if top in per_other:
            out.append(replace(per_other[top], best=True))
    return out
