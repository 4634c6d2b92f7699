"""The tree companion: gradient-boosted trees on the network's own standardised tabular inputs,
stacked with the network's heads on held-out rows (``train.tree_blend``).

Why: on tabular features a GBM is hard to beat, and the transformer's strength is elsewhere (the
event sequence, text, the arm heads). Stacking the two is the classic remedy (Shwartz-Ziv & Armon,
*Tabular data: deep learning is not all you need*, 2022: the deep model + XGBoost ensemble beat
either alone on every data set they tried). Here:

* the trees are **cross-fitted** over every training and validation row (``FOLDS`` seeded folds of
  a sample of at most ``MAX_ROWS``): each row gets a prediction from trees that never saw it, and
  scoring uses the mean of the fold models;
* ``churn``: HistGradientBoostingClassifier of ``y_churn``; the stack
  ``p = sigmoid(c + d logit(p_net) + e logit(p_tree))`` takes its weights (d, e) by maximum
  likelihood on the *validation* rows, where neither the network nor the trees were fitted
  (``d >= 0.05``; a tree weight <= 0 is dropped and the plain Platt map kept), and its intercept c
  from every fit row with (d, e) fixed (the level from the most rows, as ``calibration_rows: all``).
  This replaces the Platt map of the churn head.
* ``value``: a Poisson HistGradientBoostingRegressor of ``y_value``; the power map becomes
  ``EV' = exp(a) EV_net^b EV_tree^g``, a Poisson GLM on the same rows as the power map (every fit
  row by default: from the validation rows alone its slope was too noisy), followed by the same
  isotonic knots from the validation rows, the total over every fit row kept at the observed one.

The stack weights (``churn_tree`` = e, ``value_tree`` = g in ``ModelMeta.calibration``) are the
measured contribution of each side: e = 0 means the trees added nothing on held-out rows. The
trees are pickled into the model directory (``trees.pkl``) and scoring applies them to the same
standardised features the network reads. Numpy / scikit-learn only.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

TREES_FILE = "trees.pkl"
MAX_ROWS = 200_000       # the trees are fitted on a seeded sample of at most this many training rows
MIN_ROWS = 200           # fewer training rows (or one class): no trees
TREE_PARAMS = dict(max_iter=200, learning_rate=0.1)   # the GBM baseline's settings (evaluate/baselines.py)
BLEND_KINDS = ("none", "churn", "value", "both")


@dataclass
class TreeCompanion:
    """Fitted trees over the standardised features, in ``feature_columns`` order: one model per
    cross-fitting fold for each head (an empty list: no tree for that head); predictions are the
    mean over the folds."""

    feature_columns: list
    churn: list = field(default_factory=list)
    value: list = field(default_factory=list)

    def predict_churn(self, features: np.ndarray) -> Optional[np.ndarray]:
        """P(churn) (float64, clipped to (1e-6, 1 - 1e-6)), or None without a churn tree."""
        if not self.churn:
            return None
        x = _matrix(features)
        if not len(x):
            return np.zeros(0)
        return _clip_p(np.mean([m.predict_proba(x)[:, 1] for m in self.churn], axis=0))

    def predict_value(self, features: np.ndarray) -> Optional[np.ndarray]:
        """Expected spend (float64, >= ``VALUE_FLOOR``), or None without a value tree."""
        if not self.value:
            return None
        x = _matrix(features)
        if not len(x):
            return np.zeros(0)
        return np.maximum(np.mean([m.predict(x) for m in self.value], axis=0).astype(np.float64), VALUE_FLOOR)


VALUE_FLOOR = 1e-6
FOLDS = 3   # cross-fitting folds: every row the stack is fitted on gets a tree prediction from trees that never saw it


def _clip_p(p) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)


def _matrix(features: np.ndarray) -> np.ndarray:
    return np.asarray(features, dtype=np.float32)


def wanted(kind: str) -> tuple[bool, bool]:
    """(churn, value) for a ``train.tree_blend`` setting."""
    if kind not in BLEND_KINDS:
        raise ValueError(f"train.tree_blend must be one of {', '.join(BLEND_KINDS)}; got {kind!r}")
    return kind in ("churn", "both"), kind in ("value", "both")


def sample_rows(n: int, seed: int, cap: int = MAX_ROWS) -> np.ndarray:
    """Indices of a seeded sample of at most ``cap`` of ``n`` rows (all of them, in order, when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def fit_trees(features: np.ndarray, y_churn: np.ndarray, y_value: np.ndarray, feature_columns, *,
              kind: str = "both", seed: int = 7, folds: int = FOLDS,
              threads: Optional[int] = None) -> Optional[tuple[TreeCompanion, dict]]:
    """Cross-fitted trees for ``kind`` and their out-of-fold predictions; None when nothing could be fitted.

    The rows (a seeded sample of at most ``MAX_ROWS``) are cut into ``folds`` seeded folds; the
    trees of fold k are fitted on the other folds and predict fold k, so every sampled row gets a
    prediction from trees that never saw it; rows outside the sample get the mean of all folds'
    trees (which never saw them either).

    Returns:
        (companion, {"churn": (n,) or None, "value": (n,) or None}) — the out-of-fold predictions
        of every input row, in input order. A head whose labels have one class (churn) or no
        spend (value), or fewer than ``MIN_ROWS`` rows, gets no tree.
    """
    from contextlib import nullcontext

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    do_churn, do_value = wanted(kind)
    x = _matrix(features)
    n = len(x)
    if n < MIN_ROWS or not (do_churn or do_value):
        return None
    yc = (np.asarray(y_churn, dtype=np.float64) > 0.5).astype(int)
    yv = np.clip(np.nan_to_num(np.asarray(y_value, dtype=np.float64)), 0.0, None)
    sample = sample_rows(n, seed)
    fold = np.random.default_rng(seed + 1).permutation(len(sample)) % max(folds, 2)
    outside = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    do_churn = do_churn and 0 < yc[sample].sum() < len(sample)
    do_value = do_value and yv[sample].sum() > 0
    if not (do_churn or do_value):
        return None
    companion = TreeCompanion(feature_columns=list(feature_columns))
    oof: dict = {"churn": np.zeros(n) if do_churn else None, "value": np.zeros(n) if do_value else None}
    with threadpool_limits(limits=threads, user_api="openmp") if threads else nullcontext():
        for k in range(max(folds, 2)):
            fit_idx, out_idx = sample[fold != k], sample[fold == k]
            if do_churn:
                model = HistGradientBoostingClassifier(**TREE_PARAMS, random_state=seed).fit(x[fit_idx], yc[fit_idx])
                companion.churn.append(model)
                oof["churn"][out_idx] = model.predict_proba(x[out_idx])[:, 1]
            if do_value:
                model = HistGradientBoostingRegressor(loss="poisson", **TREE_PARAMS, random_state=seed).fit(
                    x[fit_idx], yv[fit_idx])
                companion.value.append(model)
                oof["value"][out_idx] = model.predict(x[out_idx])
        if len(outside):
            if do_churn:
                oof["churn"][outside] = companion.predict_churn(x[outside])
            if do_value:
                oof["value"][outside] = companion.predict_value(x[outside])
    if do_churn:
        oof["churn"] = _clip_p(oof["churn"])
    if do_value:
        oof["value"] = np.maximum(oof["value"], VALUE_FLOOR)
    return companion, oof


def save_trees(trees: Optional[TreeCompanion], model_dir: str) -> None:
    """Pickle ``trees`` into the model directory (nothing when None)."""
    if trees is None:
        return
    with open(Path(model_dir) / TREES_FILE, "wb") as fh:
        pickle.dump(trees, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_trees(model_dir: str) -> Optional[TreeCompanion]:
    """The pickled companion of a model directory, or None when it has none."""
    path = Path(model_dir) / TREES_FILE
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        return pickle.load(fh)   # written by save_trees of this package (a trusted model directory)
