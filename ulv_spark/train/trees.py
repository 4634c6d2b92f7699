"""The tree companion: gradient-boosted trees on the network's own standardised tabular inputs,
stacked with the network's heads on held-out rows (``train.tree_blend``).

Why: on tabular features a GBM is hard to beat, and the transformer's strength is elsewhere (the
event sequence, text, the arm heads). Stacking the two is the classic remedy (Shwartz-Ziv & Armon,
*Tabular data: deep learning is not all you need*, 2022: the deep model + XGBoost ensemble beat
either alone on every data set they tried). Here:

* ``churn``: a HistGradientBoostingClassifier of ``y_churn`` is fitted on the network's *training*
  rows (a seeded sample of at most ``MAX_ROWS``) and then the stack
  ``p = sigmoid(c + d logit(p_net) + e logit(p_tree))`` by maximum likelihood on the
  *validation* rows, which neither model was fitted on (``d, e >= 0``; a tree weight that comes
  out <= 0 is dropped and the plain Platt map kept). This replaces the Platt map of the churn head.
* ``value``: a Poisson HistGradientBoostingRegressor of ``y_value`` likewise, and the power map
  becomes ``EV' = exp(a) EV_net^b EV_tree^g`` (Poisson GLM on the validation rows, ``b, g >= 0``),
  followed by the same isotonic knots, whose level is set so that the total over every fit row
  is the observed total.

The stack weights (``churn_tree`` = e, ``value_tree`` = g in ``ModelMeta.calibration``) are the
measured contribution of each side: e = 0 means the trees added nothing on held-out rows. The
trees are pickled into the model directory (``trees.pkl``) and scoring applies them to the same
standardised features the network reads. Numpy / scikit-learn only.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
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
    """Fitted trees (either may be None) over the standardised features, in ``feature_columns`` order."""

    feature_columns: list
    churn: Optional[object] = None
    value: Optional[object] = None

    def predict_churn(self, features: np.ndarray) -> Optional[np.ndarray]:
        """P(churn) of the classifier (float64, clipped to (1e-6, 1 - 1e-6)), or None without one."""
        if self.churn is None or len(features) == 0:
            return None if self.churn is None else np.zeros(0)
        return np.clip(self.churn.predict_proba(_matrix(features))[:, 1].astype(np.float64), 1e-6, 1 - 1e-6)

    def predict_value(self, features: np.ndarray, floor: float = 1e-6) -> Optional[np.ndarray]:
        """Expected spend of the Poisson regressor (float64, > 0), or None without one."""
        if self.value is None or len(features) == 0:
            return None if self.value is None else np.zeros(0)
        return np.maximum(self.value.predict(_matrix(features)).astype(np.float64), floor)


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
              kind: str = "both", seed: int = 7, threads: Optional[int] = None) -> Optional[TreeCompanion]:
    """The trees for ``kind`` fitted on these (training) rows; None when nothing could be fitted.

    A head whose labels have one class (churn) or no spend (value), or fewer than ``MIN_ROWS``
    rows, gets no tree.
    """
    from contextlib import nullcontext

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    do_churn, do_value = wanted(kind)
    x = _matrix(features)
    if len(x) < MIN_ROWS or not (do_churn or do_value):
        return None
    idx = sample_rows(len(x), seed)
    x = x[idx]
    yc = (np.asarray(y_churn, dtype=np.float64)[idx] > 0.5).astype(int)
    yv = np.clip(np.nan_to_num(np.asarray(y_value, dtype=np.float64)[idx]), 0.0, None)
    with threadpool_limits(limits=threads, user_api="openmp") if threads else nullcontext():
        churn = (HistGradientBoostingClassifier(**TREE_PARAMS, random_state=seed).fit(x, yc)
                 if do_churn and 0 < yc.sum() < len(yc) else None)
        value = (HistGradientBoostingRegressor(loss="poisson", **TREE_PARAMS, random_state=seed).fit(x, yv)
                 if do_value and yv.sum() > 0 else None)
    if churn is None and value is None:
        return None
    return TreeCompanion(feature_columns=list(feature_columns), churn=churn, value=value)


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
