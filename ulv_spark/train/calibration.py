"""Post-hoc calibration of expected value and churn probability (numpy only; no torch, no Spark).

Fitted on the predictions of the selected epoch, stored as four floats (plus the value's
isotonic knots) in the model's meta.json (``ModelMeta.calibration``) and applied by
:func:`ulv_spark.train.model.predict_arrays`:

* value: ``EV' = exp(a) * EV ** b``, (a, b) minimising the Poisson deviance of the observed
  spend (a Poisson GLM with log link on log EV), with ``b >= 0.05``;
* churn: Platt scaling ``p' = sigmoid(c + d * logit(p))`` by maximum likelihood, ``d >= 0.05``.

Both maps are strictly increasing, so every ranking metric (Gini, Spearman, AUC, uplift order)
is the raw model's; only levels (decile totals, total predicted / actual, ECE) move. With
``train.tree_blend`` a head's map becomes a stack with the tree companion (:mod:`ulv_spark.train.trees`):
``EV' = exp(a) EV^b T^g`` and ``sigmoid(c + d logit p + e logit t)``, fitted on the validation rows
(``fit_value_stack`` / ``fit_churn_stack``), which does re-rank users; the uplift order is untouched.

Which rows (``train.calibration_rows``): ``all`` (the default) fits both maps on the selected
epoch's predictions of every training and validation row; ``validation`` on the held-out rows
only. The validation share alone (20 % of the rows) leaves the level of a heavy-tailed spend
noisy (coefficient of variation of a mean ~ sd / mean / sqrt(n): ~10 % on 700 CDNOW customers),
and the early-stopped, dropout-regularised network is barely optimistic on its own training
rows: on CDNOW with 2.8k training rows, ``all`` gave total predicted / actual 0.97 vs 0.90,
decile MAPE 0.13 vs 0.18 and churn ECE 0.009 vs 0.017 (BENCHMARKS.md, "Calibration rows"). Where the
slope bound binds, the intercept is refitted with the slope held at the bound. A map that cannot
be fitted (no spend, one churn class, too few rows) stays the identity.

Binned isotonic correction of the value (``train.calibration: isotonic``, the default): a two-parameter map cannot follow
a decile curve that is not a straight line in log-log, e.g. the lowest deciles of a model that
ranks well hold users whose mean spend is near 0, where a small over-prediction is a large
relative error. After the power / Platt maps, the *validation* rows (out of sample: the
network's own training rows are fitted too well to show the shape new users get) are cut into
equal-count bins of the mapped prediction (up to ``KNOT_BINS``, at least ``KNOT_MIN_ROWS`` rows
each), the bins' mean outcome is made increasing by pool-adjacent-violators, and predictions
move through the knots (mean prediction, mean outcome) of the pooled blocks by linear
interpolation in log space, with slope 1 beyond the end knots; the knots are then shifted by
one factor so that the total over every fit row stays the power map's (the shape from the
held-out rows, the level from all of them, as ``calibration_rows`` says). The map is continuous and
strictly increasing, so rankings do not move. Churn keeps Platt scaling alone: knots on the
validation rows made its ECE worse on CDNOW (0.0146 vs 0.0103) while the value's decile MAPE
went from 0.117 to 0.087 (BENCHMARKS.md §6b).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

MIN_SLOPE = 0.05
MIN_ROWS = 10
KNOT_BINS = 20          # at most this many equal-count bins for the isotonic knots
KNOT_MIN_ROWS = 200     # and at least this many rows per bin (fewer rows: fewer bins; < 2 bins: no knots)
_EPS = 1e-12


@dataclass(frozen=True)
class PowerCalibration:
    """The four floats; the defaults are the identity (models saved without calibration)."""

    value_a: float = 0.0
    value_b: float = 1.0
    churn_c: float = 0.0
    churn_d: float = 1.0
    # train.tree_blend (train/trees.py): the weights of the tree companion's log value / churn logit in
    # the stacked maps; 0 = no trees (the maps of the network's heads alone)
    value_tree: float = 0.0
    churn_tree: float = 0.0
    # isotonic knots after the power map, in log space: (x, y) pairs, both strictly increasing;
    # empty = no correction
    value_knots: tuple = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["value_knots"] = [list(pair) for pair in self.value_knots]
        if not out["value_knots"]:
            del out["value_knots"]   # models without knots keep the four-float dict
        for key in ("value_tree", "churn_tree"):
            if not out[key]:
                del out[key]         # nor do models without trees
        return out

    @classmethod
    def from_dict(cls, data) -> "PowerCalibration":
        """From ``ModelMeta.calibration``; missing keys (or an empty mapping) keep the identity."""
        data = data or {}
        floats = {k: float(data[k]) for k in ("value_a", "value_b", "churn_c", "churn_d", "value_tree", "churn_tree")
                  if k in data}
        knots = tuple((float(x), float(y)) for x, y in data.get("value_knots") or ())
        return cls(**floats, value_knots=knots)

    @property
    def is_identity(self) -> bool:
        return self == PowerCalibration()

    @property
    def uses_trees(self) -> bool:
        return bool(self.value_tree or self.churn_tree)

    def value(self, ev: np.ndarray, tree: Optional[np.ndarray] = None) -> np.ndarray:
        """Calibrated expected value (float64); ``tree``: the tree companion's expected value (needed
        when ``value_tree`` is not 0)."""
        ev = np.asarray(ev, dtype=np.float64)
        if self.value_a == 0.0 and self.value_b == 1.0 and not self.value_knots and not self.value_tree:
            return ev.copy()
        z = self.value_a + self.value_b * np.log(np.clip(ev, _EPS, None))
        if self.value_tree:
            z = z + self.value_tree * np.log(np.clip(_need(tree, "value", len(ev)), _EPS, None))
        return np.exp(apply_knots(z, self.value_knots))

    def churn(self, p: np.ndarray, tree: Optional[np.ndarray] = None) -> np.ndarray:
        """Calibrated churn probability (float64); ``tree``: the tree companion's P(churn) (needed when
        ``churn_tree`` is not 0)."""
        p = np.asarray(p, dtype=np.float64)
        if self.churn_c == 0.0 and self.churn_d == 1.0 and not self.churn_tree:
            return p.copy()
        z = self.churn_c + self.churn_d * _logit(p)
        if self.churn_tree:
            z = z + self.churn_tree * _logit(_need(tree, "churn", len(p)))
        return _sigmoid(z)


def _need(tree: Optional[np.ndarray], what: str, n: int) -> np.ndarray:
    if tree is None:
        raise ValueError(f"this calibration stacks the tree companion's {what}: pass its predictions "
                         f"(the model directory's trees.pkl, train/trees.py)")
    tree = np.asarray(tree, dtype=np.float64)
    if tree.shape != (n,):
        raise ValueError(f"tree {what} predictions must be ({n},); got {tree.shape}")
    return tree


def apply_knots(z: np.ndarray, knots) -> np.ndarray:
    """Piecewise-linear map through ``knots`` ((x, y), strictly increasing), slope 1 outside them."""
    if not knots:
        return z
    xs, ys = np.array([k[0] for k in knots]), np.array([k[1] for k in knots])
    out = np.interp(z, xs, ys)
    out = np.where(z < xs[0], z - xs[0] + ys[0], out)
    return np.where(z > xs[-1], z - xs[-1] + ys[-1], out)


def isotonic_knots(pred: np.ndarray, y: np.ndarray, *, forward, floor: float,
                   bins: Optional[int] = None, min_rows: Optional[int] = None) -> tuple:
    """Knots ((x, y) in the transformed space ``forward``) of the binned isotonic fit of ``y`` on ``pred``.

    ``pred`` is on the outcome's scale. Equal-count bins of ``pred``; per bin the mean prediction
    and the mean outcome; pool-adjacent-violators (weights = rows) until the outcome means
    strictly increase; knots = forward(pooled means), the outcome mean floored at ``floor`` (a zero
    mean has no log). () when fewer than 2 bins fit.
    """
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(y)
    pred, y = pred[ok], y[ok]
    bins = KNOT_BINS if bins is None else bins
    min_rows = KNOT_MIN_ROWS if min_rows is None else min_rows
    n_bins = min(bins, len(pred) // max(min_rows, 1))
    if n_bins < 2:
        return ()
    order = np.argsort(pred, kind="stable")
    blocks: list[list[float]] = []   # [rows, sum pred, sum y]
    for idx in np.array_split(order, n_bins):
        blocks.append([len(idx), float(pred[idx].sum()), float(y[idx].sum())])
        while len(blocks) > 1 and blocks[-1][2] / blocks[-1][0] <= blocks[-2][2] / blocks[-2][0]:
            n, sp, sy = blocks.pop()
            blocks[-1] = [blocks[-1][0] + n, blocks[-1][1] + sp, blocks[-1][2] + sy]
    knots: list[tuple[float, float]] = []
    for n, sp, sy in blocks:
        x, v = forward(sp / n), forward(max(sy / n, floor))
        if knots and (x <= knots[-1][0] or v <= knots[-1][1]):
            continue   # equal after flooring / rounding: keep the map strictly increasing
        knots.append((float(x), float(v)))
    return tuple(knots) if len(knots) >= 2 else ()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def _newton(objective, grad_hess, theta: np.ndarray, iters: int = 100, tol: float = 1e-12) -> np.ndarray:
    """Damped Newton on a smooth convex objective (step halving keeps every step downhill)."""
    value = objective(theta)
    for _ in range(iters):
        g, h = grad_hess(theta)
        try:
            step = np.linalg.solve(h + 1e-12 * np.eye(len(theta)), g)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-10:
            candidate = theta - t * step
            new = objective(candidate)
            if np.isfinite(new) and new <= value:
                break
            t *= 0.5
        else:
            break
        theta, improvement, value = candidate, value - new, new
        if improvement < tol * max(1.0, abs(value)):
            break
    return theta


def fit_value_power(ev: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of ``EV' = exp(a) EV^b`` minimising the Poisson deviance of ``y``; b >= 0.05; (0, 1) when unfit."""
    ev, y = np.asarray(ev, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(ev) & np.isfinite(y) & (ev > 0) & (y >= 0)
    ev, y = ev[ok], y[ok]
    if len(ev) < MIN_ROWS or y.sum() <= 0:
        return 0.0, 1.0
    scale = y.mean()   # work in units of the mean spend: the same optimum, better conditioned
    x, t = np.log(ev / scale), y / scale
    design = np.stack([np.ones_like(x), x], axis=1)
    a0 = math.log(t.sum() / np.exp(x).sum())
    alpha, b = _poisson_glm(design, t, np.array([a0, 1.0]))
    if not np.isfinite(b) or b < MIN_SLOPE:
        b = MIN_SLOPE
        alpha = math.log(t.sum() / np.exp(b * x).sum())   # the intercept's exact optimum for a fixed slope
    # back to currency units: EV' = scale * exp(alpha) * (EV / scale)^b
    return float(alpha + (1.0 - b) * math.log(scale)), float(b)


def fit_platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(c, d) of ``sigmoid(c + d logit p)`` by maximum likelihood; d >= 0.05; (0, 1) with one class."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], (y[ok] > 0.5).astype(np.float64)
    if len(p) < MIN_ROWS or y.min() == y.max():
        return 0.0, 1.0
    x = _logit(p)
    design = np.stack([np.ones_like(x), x], axis=1)
    c, d = _logistic(design, y, np.array([0.0, 1.0]))
    if not np.isfinite(d) or d < MIN_SLOPE:
        d = MIN_SLOPE
        c = churn_level(p, y, d)
    return float(c), float(d)


def logistic_intercept(offset: np.ndarray, y: np.ndarray) -> Optional[float]:
    """The intercept c maximising the likelihood of ``sigmoid(c + offset)``; None with one class or too few rows."""
    offset, y = np.asarray(offset, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(offset) & np.isfinite(y)
    offset, y = offset[ok], (y[ok] > 0.5).astype(np.float64)
    if len(y) < MIN_ROWS or y.min() == y.max():
        return None
    (c,) = _logistic(np.ones((len(y), 1)), y, np.array([0.0]), offset=offset)
    return float(c)


def churn_level(p: np.ndarray, y: np.ndarray, d: float) -> Optional[float]:
    """The Platt intercept ``c`` for a fixed slope ``d`` by maximum likelihood; None with one class."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(y)
    return logistic_intercept(d * _logit(p[ok]), y[ok])


def _poisson_glm(design: np.ndarray, t: np.ndarray, theta0: np.ndarray, offset=0.0) -> np.ndarray:
    """theta minimising the mean Poisson deviance of ``t`` under ``log mu = offset + design @ theta``."""
    def objective(theta):
        eta = np.clip(offset + design @ theta, -50, 50)
        return float(np.mean(np.exp(eta) - t * eta))

    def grad_hess(theta):
        mu = np.exp(np.clip(offset + design @ theta, -50, 50))
        return design.T @ (mu - t) / len(t), (design * mu[:, None]).T @ design / len(t)

    return _newton(objective, grad_hess, theta0)


def _logistic(design: np.ndarray, y: np.ndarray, theta0: np.ndarray, offset=0.0) -> np.ndarray:
    """theta maximising the likelihood of ``y`` under ``P = sigmoid(offset + design @ theta)``."""
    def nll(theta):
        z = offset + design @ theta
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    def grad_hess(theta):
        q = _sigmoid(offset + design @ theta)
        return design.T @ (q - y) / len(y), (design * (q * (1 - q))[:, None]).T @ design / len(y)

    return _newton(nll, grad_hess, theta0)


def fit_value_stack(ev: np.ndarray, tree: np.ndarray, y: np.ndarray) -> Optional[tuple[float, float, float]]:
    """(a, b, g) of ``EV' = exp(a) EV^b T^g`` (T: the trees' expected value) minimising the Poisson
    deviance of ``y``; None when unfit or when the trees' weight g is not positive (they add nothing).

    b is kept >= 0.05 (the network's term, as in :func:`fit_value_power`).
    """
    ev, tree, y = (np.asarray(v, dtype=np.float64) for v in (ev, tree, y))
    ok = np.isfinite(ev) & np.isfinite(tree) & np.isfinite(y) & (ev > 0) & (tree > 0) & (y >= 0)
    ev, tree, y = ev[ok], tree[ok], y[ok]
    if len(ev) < MIN_ROWS or y.sum() <= 0:
        return None
    scale = y.mean()
    x1, x2, t = np.log(ev / scale), np.log(tree / scale), y / scale
    design = np.stack([np.ones_like(x1), x1, x2], axis=1)
    alpha, b, g = _poisson_glm(design, t, np.array([0.0, 0.5, 0.5]))
    if np.isfinite(b) and b < MIN_SLOPE:
        b = MIN_SLOPE
        alpha, g = _fixed_slope_poisson(x1, x2, t, b)
    if not (np.isfinite(alpha) and np.isfinite(b) and np.isfinite(g)) or g <= 0:
        return None
    # back to currency units: EV' = scale * exp(alpha) * (EV / scale)^b * (T / scale)^g
    return float(alpha + (1.0 - b - g) * math.log(scale)), float(b), float(g)


def _fixed_slope_poisson(x1: np.ndarray, x2: np.ndarray, t: np.ndarray, b: float) -> tuple[float, float]:
    """(alpha, g) of the Poisson GLM with the network's slope fixed at ``b`` (an offset)."""
    design = np.stack([np.ones_like(x2), x2], axis=1)
    alpha, g = _poisson_glm(design, t, np.array([0.0, 0.5]), offset=b * x1)
    return float(alpha), float(g)


def fit_churn_stack(p: np.ndarray, tree: np.ndarray, y: np.ndarray) -> Optional[tuple[float, float, float]]:
    """(c, d, e) of ``sigmoid(c + d logit p + e logit t)`` (t: the trees' P(churn)) by maximum
    likelihood; None when unfit, with one class, or when the trees' weight e is not positive.

    d is kept >= 0.05 (the network's term, as in :func:`fit_platt`).
    """
    p, tree, y = (np.asarray(v, dtype=np.float64) for v in (p, tree, y))
    ok = np.isfinite(p) & np.isfinite(tree) & np.isfinite(y)
    p, tree, y = p[ok], tree[ok], (y[ok] > 0.5).astype(np.float64)
    if len(p) < MIN_ROWS or y.min() == y.max():
        return None
    x1, x2 = _logit(p), _logit(tree)
    design = np.stack([np.ones_like(x1), x1, x2], axis=1)
    c, d, e = _logistic(design, y, np.array([0.0, 0.5, 0.5]))
    if np.isfinite(d) and d < MIN_SLOPE:
        d = MIN_SLOPE
        c, e = _logistic(design[:, [0, 2]], y, np.array([0.0, 0.5]), offset=d * x1)
    if not (np.isfinite(c) and np.isfinite(d) and np.isfinite(e)) or e <= 0:
        return None
    return float(c), float(d), float(e)


def fit_power_calibration(ev, y_value, churn_p, y_churn, *, knot_rows: Optional[dict] = None,
                          trees: Optional[dict] = None) -> PowerCalibration:
    """Both maps from predictions and labels (1-D arrays of the same length).

    ``knot_rows``: {"ev", "y_value"} arrays (the validation rows) to fit the value's isotonic knots
    on, after the power map; None = the maps alone.
    ``trees`` (train.tree_blend, train/trees.py): {"held_out": {"ev", "y_value", "churn", "y_churn"
    and "tree_value" and / or "tree_churn"}, "tree_value" / "tree_churn": the trees' out-of-fold
    predictions on the rows of ``ev``}. A stack whose tree weight is positive on the held-out rows
    replaces that head's map: churn's weights come from the held-out rows and its intercept from
    every calibration row (maximum likelihood with the weights fixed); the value's stack is fitted on
    the calibration rows, like the power map, and its level kept at the observed total. ``knot_rows``
    must carry "tree_value" too.
    """
    a, b = fit_value_power(ev, y_value)
    c, d = fit_platt(churn_p, y_churn)
    power = PowerCalibration(value_a=a, value_b=b, churn_c=c, churn_d=d)
    tree_all = None
    if trees:
        held = trees["held_out"]
        if held.get("tree_churn") is not None:
            stack = fit_churn_stack(held["churn"], held["tree_churn"], held["y_churn"])
            if stack is not None:
                c, d, e = stack
                if trees.get("tree_churn") is not None:   # the weights from the held-out rows, the level from all
                    offset = d * _logit(churn_p) + e * _logit(trees["tree_churn"])
                    level = logistic_intercept(offset, y_churn)
                    c = c if level is None else level
                power = dataclasses.replace(power, churn_c=c, churn_d=d, churn_tree=e)
        if trees.get("tree_value") is not None:
            # on the calibration rows (every fit row by default), like the power map it extends: from the
            # validation rows alone the slope is noisy (CDNOW decile MAPE 0.130 vs 0.087; BENCHMARKS.md §6c)
            stack = fit_value_stack(ev, trees["tree_value"], y_value)
            if stack is not None:
                power = dataclasses.replace(power, value_a=stack[0], value_b=stack[1], value_tree=stack[2])
                tree_all = np.asarray(trees["tree_value"], dtype=np.float64)
    ev_all, y_all = np.asarray(ev, dtype=np.float64), np.asarray(y_value, dtype=np.float64)
    ok = np.isfinite(ev_all) & np.isfinite(y_all)
    if tree_all is not None:
        ok &= np.isfinite(tree_all)
        tree_all = tree_all[ok]
    ev_all, y_all = ev_all[ok], y_all[ok]

    def total(cal: PowerCalibration) -> float:
        return float(cal.value(ev_all, tree_all).sum())

    # the level: the map's total over every calibration row (the Poisson score equation makes it the
    # observed total)
    target = total(power)
    knots: tuple = ()
    if knot_rows is not None:
        yv = np.clip(np.asarray(knot_rows["y_value"], dtype=np.float64), 0, None)
        positive = yv[np.isfinite(yv) & (yv > 0)]
        floor = 1e-6 * float(positive.mean()) if len(positive) else _EPS   # 1e-6 of the spenders' mean spend
        mapped = power.value(knot_rows["ev"], knot_rows.get("tree_value") if power.value_tree else None)
        knots = isotonic_knots(mapped, yv, floor=floor, forward=lambda v: math.log(max(v, _EPS)))
    if knots:   # the shape from the held-out rows, the level from every fit row
        got = total(dataclasses.replace(power, value_knots=knots))
        if target > 0 and got > 0:
            shift = math.log(target / got)
            knots = tuple((x, v + shift) for x, v in knots)
        return dataclasses.replace(power, value_knots=knots)
    return power
