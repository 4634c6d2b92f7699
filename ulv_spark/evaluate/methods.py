"""The trained model and the synthetic oracle as backtest methods (same protocol as baselines.py).

* :class:`ModelMethod` scores users with a trained model directory through the scoring
  team's pure-pandas ``score.predict.predict_batch``; it is trained elsewhere, so ``fit`` only
  loads it (``fits_on = None``).
* :class:`Oracle` predicts the known truth of synthetic data (the ceiling): the truth columns
  are joined onto the frame it scores (see :data:`TRUTH_COLUMNS`).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from ulv_spark.evaluate.baselines import (CHURN_PROBABILITY, EXPECTED_VALUE, P_ALIVE, P_PURCHASE, TASKS,
                                          uplift_column)
from ulv_spark.schemas import USER_ID

# Truth columns a synthetic evaluation frame carries (from truth_users / truth_uplift).
TRUE_EXPECTED_SPEND = "true_expected_spend"
TRUE_EXPECTED_PURCHASES = "true_expected_purchases"
TRUE_P_ALIVE = "true_p_alive"
TRUE_P_NO_PURCHASE = "true_p_no_purchase"


def true_uplift_column(kind: str, arm: str) -> str:
    """Truth column of the true effect of ``arm`` vs control: ``true_uplift_<kind>:<arm>``."""
    return "true_" + uplift_column(kind, arm)


def trained_as_of(model_dir: str) -> Optional[dt.date]:
    """The run date the model in ``model_dir`` was trained for (its meta.json), or None."""
    from ulv_spark.train.artifacts import read_meta

    text = read_meta(model_dir).trained_as_of
    return dt.date.fromisoformat(str(text)[:10]) if text else None


def newest_model_before(model_root: str, origin: dt.date) -> Optional[str]:
    """The newest complete model directory under ``model_root`` trained on or before ``origin``.

    A model trained for run date D learned from labels that end by D, so it may be scored on
    an origin E >= D without seeing the evaluation window.
    """
    from ulv_spark.train.artifacts import COMPLETE_MARKER

    root = Path(model_root)
    if not root.is_dir():
        return None
    for path in sorted((p for p in root.iterdir() if (p / COMPLETE_MARKER).is_file()), key=lambda p: p.name,
                       reverse=True):
        trained = trained_as_of(str(path))
        if trained is not None and trained <= origin:
            return str(path)
    return None


class ModelMethod:
    """The multi-task model from a model directory, as a backtest method named ``model``.

    Predicts expected_value, p_purchase, churn_probability, value_p10/p90 and, for every
    non-control arm of the model (``meta.arms[0]`` is the control), uplift = arm outcome -
    control outcome, for conversion and value.

    Which directory scores a split (:meth:`for_split`): ``by_split[split.name]`` when given
    (models trained by the backtest on that split's training rows), else ``model_dir`` when
    given, else the newest model under ``model_root`` trained on or before the split's origin.
    With ``check_origin`` a model trained after the origin is refused (its training labels
    would overlap the evaluation window).
    """

    name = "model"
    fits_on = None
    tasks = TASKS

    def __init__(self, model_dir: Optional[str] = None, *, model_root: Optional[str] = None,
                 by_split: Optional[Mapping[str, str]] = None, check_origin: bool = True, device: str = "cpu"):
        if not (model_dir or model_root or by_split):
            raise ValueError("ModelMethod needs model_dir, model_root or by_split")
        self.model_dir = model_dir
        self.model_root = model_root
        self.by_split = dict(by_split or {})
        self.check_origin = check_origin
        self.device = device

    def for_split(self, split) -> "ModelMethod":
        """A copy bound to the model directory that scores ``split`` (raises ValueError if none)."""
        bound = type(self)
        if split.name in self.by_split:
            return bound(self.by_split[split.name], check_origin=False, device=self.device)
        if self.model_dir:
            trained = trained_as_of(self.model_dir)
            if self.check_origin and trained is not None and trained > split.origin:
                raise ValueError(f"model {Path(self.model_dir).name} was trained for {trained}, after the "
                                 f"evaluation origin {split.origin}: its labels overlap the evaluation window")
            return bound(self.model_dir, check_origin=False, device=self.device)
        if self.model_root:
            found = newest_model_before(self.model_root, split.origin)
            if found is None:
                raise ValueError(f"no complete model under {self.model_root} trained on or before {split.origin}")
            return bound(found, check_origin=False, device=self.device)
        raise ValueError(f"no model for split {split.name}")

    def fit(self, frame: Optional[pd.DataFrame] = None) -> "ModelMethod":
        from ulv_spark.train.artifacts import load_model

        if not self.model_dir:
            raise ValueError("ModelMethod.fit needs a model directory: call for_split(split) first")
        self.model_, self.meta_ = load_model(self.model_dir, device=self.device)
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        from ulv_spark.score.predict import predict_batch

        if not hasattr(self, "model_"):
            self.fit()
        out = predict_batch(frame.reset_index(drop=True), self.model_, self.meta_, device=self.device)
        result = out[[USER_ID, EXPECTED_VALUE, P_PURCHASE, "value_p10", "value_p90", CHURN_PROBABILITY]].copy()
        arms = list(self.meta_.arms)
        if len(arms) > 1 and len(out):
            conv = np.stack(out["arm_conversion"].to_numpy())
            value = np.stack(out["arm_value"].to_numpy())
            long = np.stack(out["arm_value_long"].to_numpy())
            for j, arm in enumerate(arms[1:], start=1):
                result[uplift_column("conversion", arm)] = conv[:, j] - conv[:, 0]
                result[uplift_column("value", arm)] = value[:, j] - value[:, 0]
                if long.ndim == 2 and long.shape[1] == len(arms):   # the long-term head
                    result[uplift_column("value_long", arm)] = long[:, j] - long[:, 0]
        return result


class NetworkOnlyMethod(ModelMethod):
    """The ablation of ``train.tree_blend``: the same model directory, scored by the network's heads
    alone (no tree companion, the plain maps stored beside the stack as ``calibration["network"]``),
    as a backtest method named ``model_network``. For a model without trees it scores exactly as
    :class:`ModelMethod`. Never a "best other method" of the margins (bootstrap.ABLATION_METHODS):
    the model's margin over it is the trees' contribution, the model's margin over ``gbm`` the
    network's."""

    name = "model_network"

    def fit(self, frame: Optional[pd.DataFrame] = None) -> "NetworkOnlyMethod":
        import dataclasses

        super().fit(frame)
        cal = dict(self.meta_.calibration or {})
        plain = cal.get("network")
        if plain is None:   # no stack: the map minus any tree weight (identical for a model without trees)
            plain = {k: v for k, v in cal.items() if k not in ("value_tree", "churn_tree")}
        self.meta_ = dataclasses.replace(self.meta_, calibration=dict(plain))
        self.model_.trees = None
        return self


class Oracle:
    """The truth of synthetic data as predictions: the ceiling every method is measured against.

    expected_value = true expected spend in the horizon; churn = true P(no purchase in the
    horizon) when the truth has it, else 1 - p_alive * (1 - exp(-m / p_alive)) with m the true
    expected purchases (a Poisson count for an alive user, exact when purchases are Poisson);
    uplift = the true effect per arm. A user the truth tables do not cover (e.g. seen first on
    the origin's day boundary) gets the truth of an inactive user: no spend, churn 1, no effect;
    ``missing_truth_`` counts them.
    """

    name = "oracle"
    fits_on = None
    tasks = TASKS

    def fit(self, frame: Optional[pd.DataFrame] = None) -> "Oracle":
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        if TRUE_EXPECTED_SPEND not in frame.columns or frame[TRUE_EXPECTED_SPEND].notna().sum() == 0:
            raise ValueError("oracle: no truth for these users (synthetic data only; truth_users needs a "
                             "partition at the evaluation origin)")
        self.missing_truth_ = int(frame[TRUE_EXPECTED_SPEND].isna().sum())
        out = {USER_ID: frame[USER_ID].to_numpy(),
               EXPECTED_VALUE: frame[TRUE_EXPECTED_SPEND].astype(float).fillna(0.0).to_numpy()}
        churn = None
        if TRUE_P_NO_PURCHASE in frame.columns:
            churn = frame[TRUE_P_NO_PURCHASE].astype(float).fillna(1.0).to_numpy()
        elif {TRUE_P_ALIVE, TRUE_EXPECTED_PURCHASES} <= set(frame.columns):
            p_alive = np.clip(frame[TRUE_P_ALIVE].astype(float).fillna(0.0).to_numpy(), 0.0, 1.0)
            m = np.clip(frame[TRUE_EXPECTED_PURCHASES].astype(float).fillna(0.0).to_numpy(), 0.0, None)
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(p_alive > 0, m / np.where(p_alive > 0, p_alive, 1.0), 0.0)
            churn = 1.0 - p_alive * (1.0 - np.exp(-rate))
        if churn is not None:
            out[CHURN_PROBABILITY] = np.clip(churn, 0.0, 1.0)
            out[P_PURCHASE] = 1.0 - out[CHURN_PROBABILITY]
        if TRUE_P_ALIVE in frame.columns:
            out[P_ALIVE] = frame[TRUE_P_ALIVE].astype(float).fillna(0.0).to_numpy()
        for col in frame.columns:
            if col.startswith("true_uplift_"):
                out[col[len("true_"):]] = frame[col].astype(float).fillna(0.0).to_numpy()
        return pd.DataFrame(out)
