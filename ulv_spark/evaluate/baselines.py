"""The established baselines the model is compared with, as small fit/predict objects.

Every method works on pandas frames with one row per user (features at an origin date plus,
for training, the labels of the following horizon) and follows one protocol:

* ``name``: the method's name in the metrics table;
* ``fits_on``: ``"train"`` (supervised: examples whose labels are known before the evaluation
  origin) or ``"calibration"`` (BG/NBD: the calibration-period RFM of the users scored; it never
  sees a label);
* ``fit(frame) -> self`` and ``predict(frame) -> DataFrame`` with ``user_id`` and any of
  ``expected_value``, ``p_purchase``, ``churn_probability`` and, per treatment arm,
  ``uplift_conversion:<arm>`` / ``uplift_value:<arm>`` (see :func:`uplift_column`).

lifetimes and scikit-learn are single-node libraries, so these frames live on the driver;
the backtest collects only the columns the methods need (see backtest.py).
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

# RFM columns of user_features (lifetimes definitions, in days) and the prediction columns
# every method may return.
from ulv_spark.names import (CHURN_PROBABILITY, EXPECTED_VALUE, FREQUENCY, HAS_PURCHASE,  # noqa: F401
                             MONETARY, P_PURCHASE, RECENCY, RFM_COLUMNS, T_AGE)
from ulv_spark.schemas import (ARM, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED, LABEL_RESPONSE_VALUE,
                               LABEL_VALUE, NON_FEATURE_COLUMNS, USER_ID)

EXPECTED_PURCHASES = "expected_purchases"
P_ALIVE = "p_alive"
# conversion and value in the response window; value_long = spend over the whole horizon (label_value)
UPLIFT_KINDS = ("conversion", "value", "value_long")


# What a method predicts (its ``tasks`` attribute): the backtest skips a method when none of its
# tasks has labels on a split (no purchase in the label window, no campaign exposure).
VALUE, CHURN, UPLIFT = "value", "churn", "uplift"
TASKS = (VALUE, CHURN, UPLIFT)


class NotApplicable(ValueError):
    """The method does not apply to this data (no campaigns, no purchase history): skipped quietly."""


def uplift_column(kind: str, arm: str) -> str:
    """Name of the predicted-uplift column of ``arm`` vs control: ``uplift_<kind>:<arm>``."""
    if kind not in UPLIFT_KINDS:
        raise ValueError(f"uplift kind must be one of {UPLIFT_KINDS}, got {kind!r}")
    return f"uplift_{kind}:{arm}"


def infer_feature_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns of ``frame`` that are tabular features (as schemas.feature_columns).

    Truth columns (``true_*``, synthetic data) are never features.
    """
    return [c for c in frame.columns
            if c not in NON_FEATURE_COLUMNS and not str(c).startswith("true_")
            and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]


def _require(frame: pd.DataFrame, columns: Iterable[str], who: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{who}: frame lacks column(s) {missing}; has {list(frame.columns)}")


def _matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    # HistGradientBoosting handles NaN natively, so missing features stay missing.
    return frame.loc[:, list(columns)].astype("float64").to_numpy()


# --------------------------------------------------------------------------------------------
# BG/NBD + Gamma-Gamma
# --------------------------------------------------------------------------------------------
class BgNbdGammaGamma:
    """BG/NBD purchase counts x Gamma-Gamma spend per purchase (the standard CLV baseline).

    * expected purchases in the horizon: BG/NBD ``conditional_expected_number_of_purchases_up_to_time``;
    * expected value = Gamma-Gamma ``conditional_expected_average_profit`` x expected purchases
      (Gamma-Gamma is fitted on repeat customers with a positive mean repeat value, as it
      requires; everyone else gets the population mean through its shrinkage weight);
    * churn = P(no purchase in the horizon | history), exactly under BG/NBD:
      ``(1 - P(alive)) + P(alive) * ((alpha + T) / (alpha + T + H)) ** (r + frequency)``
      (an alive customer's rate has posterior Gamma(r + x, alpha + T); a dead one buys nothing),
      and p_purchase = 1 - churn.

    Works on the calibration-period RFM (lifetimes definitions, days): ``frequency``,
    ``recency``, ``T``, ``monetary_value``. It never reads a label. When the frame has
    ``has_purchase``, only buyers are fitted on (users seen only through events have no
    purchase history; they are predicted as customers acquired at the origin, T = 0).
    """

    name = "bgnbd_gg"
    fits_on = "calibration"
    tasks = (VALUE, CHURN)

    def __init__(self, horizon_days: int, penalizer: float = 0.0, gg_penalizer: float = 0.0):
        if horizon_days <= 0:
            raise ValueError(f"horizon_days must be positive, got {horizon_days}")
        self.horizon_days = int(horizon_days)
        self.penalizer = float(penalizer)
        self.gg_penalizer = float(gg_penalizer)

    @staticmethod
    def _rfm(frame: pd.DataFrame):
        _require(frame, RFM_COLUMNS, "bgnbd_gg")
        rfm = frame.loc[:, list(RFM_COLUMNS)].astype("float64")
        if rfm[[FREQUENCY, RECENCY, T_AGE]].isna().any().any():
            raise ValueError("bgnbd_gg: frequency/recency/T must not be null (users without a "
                             "purchase before the origin have no BG/NBD history)")
        return rfm[FREQUENCY], rfm[RECENCY], rfm[T_AGE], rfm[MONETARY].fillna(0.0)

    def fit(self, frame: pd.DataFrame) -> "BgNbdGammaGamma":
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        if HAS_PURCHASE in frame.columns:
            frame = frame[frame[HAS_PURCHASE].astype(float) > 0]
        if frame.empty:
            raise NotApplicable("bgnbd_gg: no user bought before the origin (BG/NBD needs purchase histories)")
        f, r, t, m = self._rfm(frame)
        self.bgf_ = _fit_lifetimes("BG/NBD", "evaluate.bgnbd_penalizer", len(f),
                                   lambda: BetaGeoFitter(penalizer_coef=self.penalizer).fit(f, r, t))
        repeat = (f > 0) & (m > 0)
        if repeat.sum() < 2:
            raise ValueError("bgnbd_gg: Gamma-Gamma needs repeat customers with positive spend")
        self.ggf_ = _fit_lifetimes("Gamma-Gamma", "evaluate.gg_penalizer", int(repeat.sum()),
                                   lambda: GammaGammaFitter(penalizer_coef=self.gg_penalizer).fit(f[repeat], m[repeat]))
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        f, r, t, m = self._rfm(frame)
        h = self.horizon_days
        purchases = np.asarray(self.bgf_.conditional_expected_number_of_purchases_up_to_time(h, f, r, t), float)
        p_alive = np.asarray(self.bgf_.conditional_probability_alive(f, r, t), float)
        rr, alpha = self.bgf_.params_["r"], self.bgf_.params_["alpha"]
        t_arr, f_arr = t.to_numpy(), f.to_numpy()
        no_buy_if_alive = ((alpha + t_arr) / (alpha + t_arr + h)) ** (rr + f_arr)
        churn = (1.0 - p_alive) + p_alive * no_buy_if_alive
        # Returns netted into a non-positive mean repeat value would make Gamma-Gamma
        # negative; such customers count as spending nothing per repeat purchase.
        avg = np.asarray(self.ggf_.conditional_expected_average_profit(f, m.clip(lower=0.0)), float)
        return pd.DataFrame({
            USER_ID: frame[USER_ID].to_numpy(),
            EXPECTED_PURCHASES: purchases,
            P_ALIVE: p_alive,
            EXPECTED_VALUE: np.maximum(avg, 0.0) * purchases,
            CHURN_PROBABILITY: churn,
            P_PURCHASE: 1.0 - churn,
        })


def _fit_lifetimes(model: str, penalizer_key: str, n: int, fit):
    """Run a lifetimes fit; its failures as one-line ValueErrors that name the cause.

    lifetimes' ConvergenceError message starts with a newline (its first line is blank) and a
    singular Hessian surfaces as numpy's LinAlgError, so neither says what failed on its own.
    """
    from lifetimes.utils import ConvergenceError

    try:
        return fit()
    except ConvergenceError:
        raise ValueError(f"bgnbd_gg: the {model} fit did not converge on {n} users (raise {penalizer_key}, "
                         "e.g. 0.001)") from None
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"bgnbd_gg: the {model} fit failed on {n} users ({exc}; too few or too similar "
                         f"purchase histories, or raise {penalizer_key})") from None


# --------------------------------------------------------------------------------------------
# gradient-boosted trees on the tabular features
# --------------------------------------------------------------------------------------------
class _Constant:
    """Stand-in for a model when the training labels hold a single value."""

    def __init__(self, value: float):
        self.value = float(value)

    def predict(self, x):
        return np.full(len(x), self.value)

    def predict_proba(self, x):
        return np.column_stack([np.full(len(x), 1.0 - self.value), np.full(len(x), self.value)])


def _threads(n: Optional[int]):
    """Limit OpenMP threads of scikit-learn; None/0 = the library default (all cores).

    On a shared or oversubscribed machine OpenMP's spinning threads can make a fit 30x
    slower than one thread, so the number is configurable (evaluate.gbm_threads).
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="openmp") if n else nullcontext()


def _regressor(x, y, *, max_iter, learning_rate, random_state, threads=None):
    from sklearn.ensemble import HistGradientBoostingRegressor

    y = np.clip(np.asarray(y, float), 0.0, None)
    if y.sum() <= 0:
        return _Constant(0.0)
    # Poisson loss: spend is non-negative, mostly zero and heavy-tailed; the log link keeps
    # predictions positive and the loss still targets the mean, which value metrics score.
    with _threads(threads):
        return HistGradientBoostingRegressor(loss="poisson", max_iter=max_iter, learning_rate=learning_rate,
                                             random_state=random_state).fit(x, y)


def _classifier(x, y, *, max_iter, learning_rate, random_state, threads=None):
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(y, float)
    if np.unique(y).size < 2:
        return _Constant(float(y.mean()) if y.size else 0.0)
    with _threads(threads):
        return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                              random_state=random_state).fit(x, y.astype(int))


def _predict(model, x, threads, proba: bool = False):
    with _threads(threads):
        return model.predict_proba(x)[:, 1] if proba else model.predict(x)


class TabularGbm:
    """scikit-learn HistGradientBoosting on the same tabular features the model gets.

    Value: Poisson-loss regressor on ``label_value``; churn: classifier on ``label_churned``;
    p_purchase = 1 - churn_probability.
    """

    name = "gbm"
    fits_on = "train"
    tasks = (VALUE, CHURN)

    def __init__(self, feature_columns: Optional[Sequence[str]] = None, max_iter: int = 200,
                 learning_rate: float = 0.1, random_state: int = 7, threads: Optional[int] = None):
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.params = dict(max_iter=max_iter, learning_rate=learning_rate, random_state=random_state,
                           threads=threads)

    def fit(self, frame: pd.DataFrame) -> "TabularGbm":
        self.features_ = self.feature_columns or infer_feature_columns(frame)
        _require(frame, [*self.features_, LABEL_VALUE, LABEL_CHURNED], self.name)
        if frame.empty:
            raise ValueError("gbm: no training rows")
        x = _matrix(frame, self.features_)
        self.value_model_ = _regressor(x, frame[LABEL_VALUE], **self.params)
        self.churn_model_ = _classifier(x, frame[LABEL_CHURNED], **self.params)
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = _matrix(frame, self.features_)
        threads = self.params["threads"]
        churn = _predict(self.churn_model_, x, threads, proba=True)
        return pd.DataFrame({
            USER_ID: frame[USER_ID].to_numpy(),
            EXPECTED_VALUE: np.maximum(_predict(self.value_model_, x, threads), 0.0),
            CHURN_PROBABILITY: churn,
            P_PURCHASE: 1.0 - churn,
        })


# --------------------------------------------------------------------------------------------
# RFM-quantile heuristic
# --------------------------------------------------------------------------------------------
class RfmHeuristic:
    """Classic RFM scoring turned into predictions by the training users' outcomes per score.

    R, F and M are each scored 1..q by the q-quantiles of the training frame (R on days since
    the last purchase, fewer = better: ``T - recency``; F on ``frequency``; M on
    ``monetary_value``); missing values score 1. The RFM score is R + F + M. A user's expected
    value and churn probability are the mean ``label_value`` / ``label_churned`` of training
    users with the same score (the overall mean for a score no training user had).
    """

    name = "rfm_heuristic"
    fits_on = "train"
    tasks = (VALUE, CHURN)

    def __init__(self, quantiles: int = 5):
        if quantiles < 2:
            raise ValueError(f"quantiles must be at least 2, got {quantiles}")
        self.quantiles = int(quantiles)

    @staticmethod
    def _raw(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        _require(frame, RFM_COLUMNS, "rfm_heuristic")
        num = frame.loc[:, list(RFM_COLUMNS)].astype("float64")
        return {"r": -(num[T_AGE] - num[RECENCY]).to_numpy(),  # negated: higher = better
                "f": num[FREQUENCY].to_numpy(), "m": num[MONETARY].to_numpy()}

    def _score(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(len(raw["r"]), dtype=np.int64)
        for key, edges in self.edges_.items():
            values = raw[key]
            # side="left": a value equal to a quantile edge belongs to the lower bin, so a mass
            # of ties (e.g. frequency 0) stays at the bottom instead of jumping past every edge.
            part = 1 + np.searchsorted(edges, values, side="left")
            total += np.where(np.isnan(values), 1, part)
        return total

    def fit(self, frame: pd.DataFrame) -> "RfmHeuristic":
        _require(frame, [LABEL_VALUE, LABEL_CHURNED], self.name)
        if frame.empty:
            raise ValueError("rfm_heuristic: no training rows")
        raw = self._raw(frame)
        probs = np.arange(1, self.quantiles) / self.quantiles
        self.edges_ = {k: np.nanquantile(v, probs) if np.isfinite(v).any() else np.full(probs.size, np.inf)
                       for k, v in raw.items()}
        scores = self._score(raw)
        labels = pd.DataFrame({"score": scores, "value": frame[LABEL_VALUE].astype(float).to_numpy(),
                               "churn": frame[LABEL_CHURNED].astype(float).to_numpy()})
        self.table_ = labels.groupby("score").mean()
        self.fallback_ = labels[["value", "churn"]].mean()
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        scores = pd.Series(self._score(self._raw(frame)))
        value = scores.map(self.table_["value"]).fillna(self.fallback_["value"]).to_numpy()
        churn = scores.map(self.table_["churn"]).fillna(self.fallback_["churn"]).to_numpy()
        return pd.DataFrame({USER_ID: frame[USER_ID].to_numpy(), "rfm_score": scores.to_numpy(),
                             EXPECTED_VALUE: value, CHURN_PROBABILITY: churn, P_PURCHASE: 1.0 - churn})


def _campaign_arms(frame: pd.DataFrame, features: Sequence[str], who: str,
                   min_rows_per_arm: int) -> tuple[pd.DataFrame, str, set]:
    """The exposed training rows, the control arm and the arms with too few rows to learn from.

    Rows with a campaign arm and an observed response are exposed; arms are pooled by name
    across campaigns; the control arm is the one flagged ``is_control``.

    Raises:
        NotApplicable: no exposed row (no campaign: the method is skipped quietly).
        ValueError: not exactly one control arm, or too few rows in the control arm.
    """
    _require(frame, [*features, ARM, IS_CONTROL, LABEL_CONVERTED, LABEL_RESPONSE_VALUE], who)
    exposed = frame[frame[ARM].notna() & frame[LABEL_CONVERTED].notna()]
    if exposed.empty:
        raise NotApplicable("no campaigns in the training rows")
    controls = exposed.loc[exposed[IS_CONTROL].fillna(False).astype(bool), ARM].unique()
    if len(controls) != 1:
        raise ValueError(f"{who}: need exactly one control arm in the training rows, got {list(controls)}")
    control = str(controls[0])
    counts = exposed[ARM].value_counts()
    small = counts[counts < min_rows_per_arm]
    if control in small.index or len(counts) < 2:
        raise ValueError(f"{who}: too few exposed training rows per arm: {counts.to_dict()}")
    return exposed, control, set(small.index)


# --------------------------------------------------------------------------------------------
# two-model uplift
# --------------------------------------------------------------------------------------------
class TwoModelUplift:
    """Two-model (T-learner) uplift: one GBM per arm, uplift = arm prediction - control's.

    Fitted on the training rows with a campaign arm and an observed response: per arm a
    classifier on ``label_converted`` and Poisson regressors on ``label_response_value`` and
    on ``label_value`` (the horizon's spend: the long-term effect). Arms are pooled by name
    across campaigns; the control arm is the one flagged ``is_control``. Predicts
    ``uplift_conversion:<arm>``, ``uplift_value:<arm>`` and ``uplift_value_long:<arm>`` for
    every other arm.
    """

    name = "two_model_gbm"
    fits_on = "train"
    tasks = (UPLIFT,)

    def __init__(self, feature_columns: Optional[Sequence[str]] = None, max_iter: int = 200,
                 learning_rate: float = 0.1, random_state: int = 7, min_rows_per_arm: int = 20,
                 threads: Optional[int] = None):
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.params = dict(max_iter=max_iter, learning_rate=learning_rate, random_state=random_state,
                           threads=threads)
        self.min_rows_per_arm = int(min_rows_per_arm)

    def fit(self, frame: pd.DataFrame) -> "TwoModelUplift":
        self.features_ = self.feature_columns or infer_feature_columns(frame)
        exposed, self.control_arm_, small = _campaign_arms(frame, self.features_, self.name, self.min_rows_per_arm)
        self.models_ = {}
        for arm, rows in exposed.groupby(ARM, sort=True):
            if arm in small:
                continue
            x = _matrix(rows, self.features_)
            long = (_regressor(x, rows[LABEL_VALUE].fillna(0.0).clip(lower=0.0), **self.params)
                    if LABEL_VALUE in rows.columns else None)   # no horizon labels: no long-term kind
            self.models_[str(arm)] = (_classifier(x, rows[LABEL_CONVERTED], **self.params),
                                      _regressor(x, rows[LABEL_RESPONSE_VALUE].fillna(0.0), **self.params), long)
        self.arms_ = [a for a in self.models_ if a != self.control_arm_]
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = _matrix(frame, self.features_)
        threads = self.params["threads"]
        base_conv, base_value, base_long = self.models_[self.control_arm_]
        conv0, value0 = _predict(base_conv, x, threads, proba=True), _predict(base_value, x, threads)
        long0 = None if base_long is None else _predict(base_long, x, threads)
        out = {USER_ID: frame[USER_ID].to_numpy()}
        for arm in self.arms_:
            conv, value, long = self.models_[arm]
            out[uplift_column("conversion", arm)] = _predict(conv, x, threads, proba=True) - conv0
            out[uplift_column("value", arm)] = _predict(value, x, threads) - value0
            if long is not None and long0 is not None:
                out[uplift_column("value_long", arm)] = _predict(long, x, threads) - long0
        return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# X-learner and class transformation (one arm vs control at a time)
# --------------------------------------------------------------------------------------------
def _effect_regressor(x, y, *, max_iter, learning_rate, random_state, threads=None):
    """Squared-error HistGradientBoosting for a signed pseudo-outcome (an effect, not a spend)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    y = np.asarray(y, float)
    if y.size == 0 or np.all(y == y[0]):
        return _Constant(float(y[0]) if y.size else 0.0)
    with _threads(threads):
        return HistGradientBoostingRegressor(loss="squared_error", max_iter=max_iter, learning_rate=learning_rate,
                                             random_state=random_state).fit(x, y)


def _fit_classifier(x, z, sample_weight, *, max_iter, learning_rate, random_state, threads=None):
    from sklearn.ensemble import HistGradientBoostingClassifier

    z = np.asarray(z, int)
    if np.unique(z).size < 2:
        return _Constant(float(z.mean()) if z.size else 0.0)
    with _threads(threads):
        return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                              random_state=random_state).fit(x, z, sample_weight=sample_weight)


class _ArmVsControl:
    """Shared fit loop of the per-arm uplift learners: one learner per (arm vs control, outcome).

    Fitted on the exposed training rows of the arm and of the control arm (arms pooled by name,
    as two_model_gbm). The propensity of an arm is its empirical share among those rows (the
    arms of a randomised campaign are assigned with known, constant probabilities, which this
    estimates; ``propensity_``). Predicts ``uplift_<kind>:<arm>`` for every kind of UPLIFT_KINDS.
    """

    fits_on = "train"
    tasks = (UPLIFT,)

    def __init__(self, feature_columns: Optional[Sequence[str]] = None, max_iter: int = 200,
                 learning_rate: float = 0.1, random_state: int = 7, min_rows_per_arm: int = 20,
                 threads: Optional[int] = None):
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.params = dict(max_iter=max_iter, learning_rate=learning_rate, random_state=random_state,
                           threads=threads)
        self.min_rows_per_arm = int(min_rows_per_arm)

    def fit(self, frame: pd.DataFrame):
        self.features_ = self.feature_columns or infer_feature_columns(frame)
        exposed, self.control_arm_, small = _campaign_arms(frame, self.features_, self.name, self.min_rows_per_arm)
        self.arms_ = sorted(str(a) for a in exposed[ARM].unique() if a != self.control_arm_ and a not in small)
        self.models_, self.propensity_ = {}, {}
        for arm in self.arms_:
            rows = exposed[exposed[ARM].isin([arm, self.control_arm_])]
            x = _matrix(rows, self.features_)
            w = (rows[ARM] == arm).to_numpy(int)
            p = float(w.mean())
            self.propensity_[arm] = p
            converted = rows[LABEL_CONVERTED].astype(float).to_numpy()
            value = rows[LABEL_RESPONSE_VALUE].fillna(0.0).astype(float).to_numpy()
            outcomes = [("conversion", converted), ("value", value)]
            if LABEL_VALUE in rows.columns:   # the horizon's spend: the long-term kind
                outcomes.append(("value_long", rows[LABEL_VALUE].fillna(0.0).clip(lower=0.0).astype(float).to_numpy()))
            self.models_[arm] = {kind: self._fit_arm(x, y, w, p, binary=(kind == "conversion"))
                                 for kind, y in outcomes}
        return self

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = _matrix(frame, self.features_)
        out = {USER_ID: frame[USER_ID].to_numpy()}
        for arm in self.arms_:
            for kind in UPLIFT_KINDS:
                if kind in self.models_[arm]:
                    out[uplift_column(kind, arm)] = self._predict_arm(self.models_[arm][kind], x)
        return pd.DataFrame(out)


class XLearnerUplift(_ArmVsControl):
    """X-learner (Kuenzel, Sekhon, Bickel & Yu 2019) on HistGradientBoosting, per arm vs control.

    1. outcome models per group: mu0 on control rows, mu1 on the arm's rows (a classifier for
       conversion, a Poisson regressor for value);
    2. imputed effects: D1 = Y - mu0(X) on the arm's rows, D0 = mu1(X) - Y on control rows, and
       a squared-error regressor for each (tau1, tau0);
    3. uplift(x) = p * tau0(x) + (1 - p) * tau1(x), with p the arm's propensity (its share of
       the arm + control rows): the effect model fitted on the larger group gets the larger weight.
    """

    name = "x_learner"

    def _fit_arm(self, x, y, w, p, *, binary: bool):
        treated, control = w == 1, w == 0
        if binary:
            m1, m0 = (_classifier(x[g], y[g], **self.params) for g in (treated, control))
        else:
            m1, m0 = (_regressor(x[g], y[g], **self.params) for g in (treated, control))
        threads = self.params["threads"]
        d1 = y[treated] - _predict(m0, x[treated], threads, proba=binary)
        d0 = _predict(m1, x[control], threads, proba=binary) - y[control]
        return (p, _effect_regressor(x[treated], d1, **self.params), _effect_regressor(x[control], d0, **self.params))

    def _predict_arm(self, fitted, x):
        p, tau1, tau0 = fitted
        threads = self.params["threads"]
        return p * _predict(tau0, x, threads) + (1.0 - p) * _predict(tau1, x, threads)


class ClassTransformationUplift(_ArmVsControl):
    """Class transformation (conversion) and transformed outcome (value), per arm vs control.

    * conversion (Jaskowski & Jaroszewicz 2012): Z = 1 when (converted and treated) or (not
      converted and control); a classifier on Z with sample weights 1 / (2p) for the arm's
      rows and 1 / (2(1 - p)) for control rows (so both groups weigh one half, the trick's
      assumption), and uplift = 2 P(Z = 1 | x) - 1;
    * value (Athey & Imbens 2015): the transformed outcome Y* = Y (W - p) / (p (1 - p)), whose
      conditional mean is the effect under randomisation, regressed with squared error.

    With p the arm's propensity (its share of the arm + control rows). Equals scikit-uplift's
    ``ClassTransformation`` (with those sample weights) and ``ClassTransformationReg``
    (``propensity_val=p``) on the same estimator.
    """

    name = "class_transformation"

    def _fit_arm(self, x, y, w, p, *, binary: bool):
        if binary:
            z = (y.astype(int) == w).astype(int)
            weight = np.where(w == 1, 0.5 / p, 0.5 / (1.0 - p))
            return ("class", _fit_classifier(x, z, weight, **self.params))
        return ("regression", _effect_regressor(x, y * (w - p) / (p * (1.0 - p)), **self.params))

    def _predict_arm(self, fitted, x):
        kind, model = fitted
        threads = self.params["threads"]
        if kind == "class":
            return 2.0 * _predict(model, x, threads, proba=True) - 1.0
        return _predict(model, x, threads)
