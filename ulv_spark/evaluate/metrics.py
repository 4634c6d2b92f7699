"""Evaluation metrics for value, churn and uplift predictions (numpy only).

Every function takes 1-d array-likes of equal length (one entry per user) and returns plain
floats or numpy arrays, so the same code scores a pandas column, a numpy array or a list.

Conventions, stated once:

* Rankings are by score descending. Users with equal scores form one group: curves only have
  points at group boundaries (a straight segment across a tie group), so a constant score is
  exactly as good as a random order, never better.
* Value: normalised Gini = (area between the gain curve and the diagonal) / (the same area
  for the perfect ranking by the actual values). Decile MAPE = mean over the 10 equal-size
  predicted-value deciles of |predicted total - actual total| / actual total (deciles whose
  actual total is 0 are left out; the decile table shows them).
* Churn: ROC-AUC (Mann-Whitney, ties count one half), PR-AUC as average precision (step
  interpolation, as scikit-learn's ``average_precision_score``), expected calibration error
  over 10 equal-width probability bins weighted by bin size.
* Uplift (treated vs control, one arm at a time): the Qini curve at the top-k users is
  ``Y_t(k) - Y_c(k) * n_t(k) / n_c(k)`` divided by the total number of treated users, so it ends
  at the average treatment effect; the Qini coefficient is its area minus the area under the
  random line from (0, 0) to (1, ATE) (0 for a random or constant score). The uplift curve at k
  is ``(mean_t(k) - mean_c(k)) * k / n`` and AUUC is its plain area (a random score gives about
  ATE / 2). uplift@k is mean_t - mean_c among the top share k of all users.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

Curve = Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _vec(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vec(a, names[0]), _vec(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("metrics need at least one row")
    return a, b


def _binary(y, name: str = "y_true") -> np.ndarray:
    arr = _vec(y, name)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be 0/1")
    return arr


def _order_desc(score: np.ndarray) -> np.ndarray:
    """Indices sorting ``score`` descending; equal scores keep input order (stable)."""
    return np.argsort(-score, kind="mergesort")


def _group_ends(sorted_score: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    return np.r_[np.flatnonzero(np.diff(sorted_score)), sorted_score.size - 1]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of ``x`` ascending, ties getting the average of their ranks."""
    x = _vec(x, "x")
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ends = _group_ends(sorted_x)
    starts = np.r_[0, ends[:-1] + 1]
    avg = (starts + ends) / 2.0 + 1.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts + 1)
    return ranks


# --------------------------------------------------------------------------------------------
# value
# --------------------------------------------------------------------------------------------
def gain_curve(actual, predicted) -> Curve:
    """Cumulative share of the actual total captured by the top share of users by prediction.

    Returns ``(x, y)``: x = share of users targeted (0..1), y = share of the actual total they
    hold, with a point at (0, 0) and one per group of equal predictions. Lift = y / x.
    """
    actual, predicted = _pair(actual, predicted, ("actual", "predicted"))
    total = actual.sum()
    if total <= 0:
        raise ValueError("gain curve needs a positive actual total")
    order = _order_desc(predicted)
    ends = _group_ends(predicted[order])
    cum = np.cumsum(actual[order])[ends]
    x = np.r_[0.0, (ends + 1) / actual.size]
    y = np.r_[0.0, cum / total]
    return x, y


def gini(actual, predicted) -> float:
    """Gini of ``actual`` ranked by ``predicted``: 2 x the area between gain curve and diagonal."""
    x, y = gain_curve(actual, predicted)
    return 2.0 * (_trapezoid(x, y) - 0.5)


def normalized_gini(actual, predicted) -> float:
    """Gini of the predicted ranking divided by the Gini of the perfect ranking (1 = perfect).

    Raises:
        ValueError: when all actual values are equal (no ranking to get right).
    """
    best = gini(actual, actual)
    if best <= 0:
        raise ValueError("normalised Gini is undefined when all actual values are equal")
    return gini(actual, predicted) / best


def decile_table(actual, predicted, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Predicted vs actual totals per predicted-value bin (bin 1 = highest predictions).

    Users are sorted by prediction descending and cut into ``n_bins`` bins of equal size
    (sizes differ by at most one; equal predictions on a boundary are split in input order).

    Returns:
        dict of arrays: ``bin`` (1..n_bins), ``n``, ``predicted_total``, ``actual_total``,
        ``predicted_mean``, ``actual_mean``, ``ape`` (|pred - actual| / actual; NaN when the
        actual total is 0).
    """
    actual, predicted = _pair(actual, predicted, ("actual", "predicted"))
    if n_bins < 1 or n_bins > actual.size:
        raise ValueError(f"n_bins must be in 1..{actual.size}, got {n_bins}")
    order = _order_desc(predicted)
    bins = np.array_split(order, n_bins)
    n = np.array([b.size for b in bins], dtype=np.float64)
    pred_tot = np.array([predicted[b].sum() for b in bins])
    act_tot = np.array([actual[b].sum() for b in bins])
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.where(act_tot != 0, np.abs(pred_tot - act_tot) / np.abs(act_tot), np.nan)
    return {"bin": np.arange(1, n_bins + 1), "n": n, "predicted_total": pred_tot,
            "actual_total": act_tot, "predicted_mean": pred_tot / n, "actual_mean": act_tot / n,
            "ape": ape}


def decile_mape(actual, predicted, n_bins: int = 10) -> float:
    """Mean absolute percentage error of predicted vs actual totals per predicted decile."""
    ape = decile_table(actual, predicted, n_bins)["ape"]
    if np.all(np.isnan(ape)):
        return math.nan
    return float(np.nanmean(ape))


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either input is constant."""
    x, y = _pair(x, y, ("x", "y"))
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc) / denom if denom > 0 else math.nan


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN when either is constant."""
    x, y = _pair(x, y, ("x", "y"))
    return pearson(rankdata(x), rankdata(y))


# --------------------------------------------------------------------------------------------
# churn (binary outcome, probability score)
# --------------------------------------------------------------------------------------------
def roc_auc(y_true, score) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count 1/2)."""
    y, s = _pair(y_true, score, ("y_true", "score"))
    y = _binary(y)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes in y_true")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true, score) -> float:
    """PR-AUC as average precision: sum over thresholds of (recall step) x precision."""
    y, s = _pair(y_true, score, ("y_true", "score"))
    y = _binary(y)
    n_pos = y.sum()
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive in y_true")
    order = _order_desc(s)
    ends = _group_ends(s[order])
    tp = np.cumsum(y[order])[ends]
    precision = tp / (ends + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


pr_auc = average_precision


def reliability_table(y_true, prob, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Observed rate vs mean predicted probability in ``n_bins`` equal-width bins of [0, 1].

    Bin i holds probabilities in [i / n_bins, (i + 1) / n_bins); 1.0 falls in the last bin.

    Returns:
        dict of arrays: ``lower``, ``upper``, ``n``, ``mean_predicted``, ``observed_rate``
        (NaN for empty bins).
    """
    y, p = _pair(y_true, prob, ("y_true", "prob"))
    y = _binary(y)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("prob must lie in [0, 1]")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(n > 0, sum_p / n, np.nan)
        rate = np.where(n > 0, sum_y / n, np.nan)
    edges = np.arange(n_bins + 1) / n_bins
    return {"lower": edges[:-1], "upper": edges[1:], "n": n, "mean_predicted": mean_p, "observed_rate": rate}


def expected_calibration_error(y_true, prob, n_bins: int = 10) -> float:
    """Size-weighted mean |observed rate - mean predicted probability| over the bins."""
    table = reliability_table(y_true, prob, n_bins)
    filled = table["n"] > 0
    gap = np.abs(table["observed_rate"][filled] - table["mean_predicted"][filled])
    return float(np.sum(table["n"][filled] * gap) / np.sum(table["n"]))


# --------------------------------------------------------------------------------------------
# uplift (treated vs control, one arm at a time)
# --------------------------------------------------------------------------------------------
def _uplift_cumulants(outcome, treated, score):
    y, s = _pair(outcome, score, ("outcome", "score"))
    t = _binary(_vec(treated, "treated"), "treated")
    if t.shape != y.shape:
        raise ValueError(f"treated and outcome differ in length: {t.size} vs {y.size}")
    n_t = t.sum()
    if n_t == 0 or n_t == t.size:
        raise ValueError("uplift metrics need both treated and control users")
    order = _order_desc(s)
    ends = _group_ends(s[order])
    t_sorted, y_sorted = t[order], y[order]
    cum_nt = np.cumsum(t_sorted)[ends]
    cum_yt = np.cumsum(y_sorted * t_sorted)[ends]
    cum_nc = (ends + 1) - cum_nt
    cum_yc = np.cumsum(y_sorted * (1 - t_sorted))[ends]
    return ends + 1, cum_nt, cum_yt, cum_nc, cum_yc, y.size, n_t


def qini_curve(outcome, treated, score) -> Curve:
    """Qini curve ``(x, y)``: x = share targeted, y = incremental outcome per treated user.

    y(k) = (Y_t(k) - Y_c(k) * n_t(k) / n_c(k)) / N_t, with the control term 0 while no
    control user is among the top k. y(1) is the average treatment effect.
    """
    k, nt, yt, nc, yc, n, n_t = _uplift_cumulants(outcome, treated, score)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_c = np.where(nc > 0, yc * nt / np.where(nc > 0, nc, 1), 0.0)
    return np.r_[0.0, k / n], np.r_[0.0, (yt - scaled_c) / n_t]


def qini_coefficient(outcome, treated, score) -> float:
    """Area between the Qini curve and the random line from (0, 0) to (1, ATE)."""
    x, y = qini_curve(outcome, treated, score)
    return _trapezoid(x, y) - y[-1] / 2.0


def uplift_curve(outcome, treated, score) -> Curve:
    """Uplift curve ``(x, y)``: y(k) = (mean_t(k) - mean_c(k)) * k / n (0 while a group is empty)."""
    k, nt, yt, nc, yc, n, _ = _uplift_cumulants(outcome, treated, score)
    both = (nt > 0) & (nc > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.where(both, yt / np.where(nt > 0, nt, 1) - yc / np.where(nc > 0, nc, 1), 0.0)
    return np.r_[0.0, k / n], np.r_[0.0, diff * k / n]


def auuc(outcome, treated, score) -> float:
    """Area under the uplift curve (x = share targeted); a random score gives about ATE / 2."""
    x, y = uplift_curve(outcome, treated, score)
    return _trapezoid(x, y)


def uplift_at_k(outcome, treated, score, k: float = 0.3) -> float:
    """mean outcome of treated - mean outcome of control among the top share ``k`` of users.

    The top ``ceil(k * n)`` users by score are taken (equal scores in input order). NaN when
    that set holds no treated or no control user.
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    y, s = _pair(outcome, score, ("outcome", "score"))
    t = _binary(_vec(treated, "treated"), "treated")
    if t.shape != y.shape:
        raise ValueError(f"treated and outcome differ in length: {t.size} vs {y.size}")
    top = _order_desc(s)[: int(math.ceil(k * y.size))]
    yt, tt = y[top], t[top]
    if tt.sum() == 0 or tt.sum() == tt.size:
        return math.nan
    return float(yt[tt == 1].mean() - yt[tt == 0].mean())
