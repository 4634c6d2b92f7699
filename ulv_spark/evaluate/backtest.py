"""Rolling-origin backtest: every method fitted and scored on the same split, one metrics table.

Input is one pandas frame of *examples* (grain: one row per (user_id, origin_date)): the
user's features as of ``origin_date`` (only data strictly before it) and the labels of
``[origin_date, origin_date + horizon_days)``, as in the ``training_examples`` table, plus,
on synthetic data, truth columns (see methods.py). A :class:`Split` says which rows are
scored and which may be learned from:

* test rows: users at the evaluation origin E, all of them or a seeded share
  (``test_share``, chosen by a hash of user_id, so the same users on every run);
* train rows (supervised methods): rows at the split's ``train_origins`` (each at least one
  horizon before E, so their labels end before E starts) plus, when ``test_share < 1``, the
  other users at E (a cross-sectional split: the only option when the history is too short
  for a past origin, as on CDNOW, or when the one campaign to learn uplift from lies in E's
  window);
* calibration rows (BG/NBD): the RFM of every user at E, without labels.

The frames live on the driver because lifetimes and scikit-learn are single-node; callers
collect only the columns the methods need (see frames.py).
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ulv_spark.evaluate import bootstrap as B
from ulv_spark.evaluate import metrics as M
from ulv_spark.evaluate.baselines import (CHURN, CHURN_PROBABILITY, EXPECTED_VALUE, HAS_PURCHASE, RFM_COLUMNS, TASKS,
                                          UPLIFT, UPLIFT_KINDS, VALUE, NotApplicable)
from ulv_spark.evaluate.methods import TRUE_EXPECTED_SPEND, true_uplift_column
from ulv_spark.runtime import get_logger
from ulv_spark.schemas import (ARM, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED, LABEL_RESPONSE_VALUE,
                               LABEL_VALUE, ORIGIN_DATE, USER_ID)

METRIC_COLUMNS = ("dataset", "split", "method", "metric", "value")
# Higher-is-better metrics also reported as a share of the oracle's value on synthetic data.
ORACLE_SHARE_PREFIXES = ("value_gini", "value_spearman", "churn_auc", "qini_")
UPLIFT_OUTCOME = {"conversion": LABEL_CONVERTED, "value": LABEL_RESPONSE_VALUE, "value_long": LABEL_VALUE}


@dataclass(frozen=True)
class Split:
    """One backtest split: evaluation origin, horizon, training origins and the test users."""

    origin: dt.date
    horizon_days: int
    train_origins: tuple[dt.date, ...] = ()
    test_share: float = 1.0
    seed: int = 7

    def __post_init__(self):
        if not 0 < self.test_share <= 1:
            raise ValueError(f"test_share must be in (0, 1], got {self.test_share}")
        late = [d for d in self.train_origins if d + dt.timedelta(days=self.horizon_days) > self.origin]
        if late:
            raise ValueError(f"train origins {late} have labels that run past the evaluation origin {self.origin}")

    @property
    def name(self) -> str:
        base = f"origin={self.origin.isoformat()}/h={self.horizon_days}"
        return base if self.test_share >= 1 else f"{base}/test={self.test_share:g}"


def rolling_splits(as_of: dt.date, *, horizon_days: int, origins: int = 1, step_days: int = 30,
                   train_origins: int = 2, test_share: float = 1.0, seed: int = 7) -> list[Split]:
    """Splits for evaluation origins E_j = as_of - H - j * step (labels complete before as_of).

    Each E_j learns from the origins E_j - H - k * step, k = 0..train_origins-1, oldest last.
    """
    if origins < 1:
        raise ValueError(f"origins must be at least 1, got {origins}")
    h, step = dt.timedelta(days=horizon_days), dt.timedelta(days=step_days)
    out = []
    for j in range(origins):
        origin = as_of - h - j * step
        past = tuple(origin - h - k * step for k in range(train_origins))
        out.append(Split(origin, horizon_days, past, test_share, seed))
    return out


def holdout_mask(user_ids, share: float, seed: int) -> np.ndarray:
    """True for the users in the seeded test share (stable: a hash of user_id and seed)."""
    ids = pd.Series(np.asarray(user_ids, dtype=object)).astype(str)
    if share >= 1:
        return np.ones(len(ids), dtype=bool)
    hashed = pd.util.hash_pandas_object(ids, index=False, hash_key=f"ulv{seed:013d}"[:16]).to_numpy()
    return (hashed % np.uint64(1_000_000)) < np.uint64(int(round(share * 1_000_000)))


@dataclass
class SplitFrames:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame


def partition(examples: pd.DataFrame, split: Split) -> SplitFrames:
    """The train, calibration and test frames of ``split`` (see the module docstring)."""
    origin_dates = pd.to_datetime(examples[ORIGIN_DATE]).dt.date
    at_origin = examples[origin_dates == split.origin]
    if at_origin.empty:
        raise ValueError(f"no examples at the evaluation origin {split.origin}")
    if at_origin[USER_ID].duplicated().any():
        raise ValueError(f"examples hold duplicate users at origin {split.origin}")
    in_test = holdout_mask(at_origin[USER_ID], split.test_share, split.seed)
    past = examples[origin_dates.isin(set(split.train_origins))]
    train = pd.concat([past, at_origin[~in_test]], ignore_index=True)
    calib_cols = [USER_ID, *[c for c in (*RFM_COLUMNS, HAS_PURCHASE) if c in at_origin.columns]]
    return SplitFrames(train=train, calibration=at_origin[calib_cols].reset_index(drop=True),
                       test=at_origin[in_test].reset_index(drop=True))


# --------------------------------------------------------------------------------------------
# metrics of one method on one split
# --------------------------------------------------------------------------------------------
def _safe(fn, *args, **kwargs) -> Optional[float]:
    """The metric, or None where it is undefined on this data (one class, zero totals...)."""
    try:
        value = float(fn(*args, **kwargs))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def uplift_arm_rows(test: pd.DataFrame, pred: pd.DataFrame):
    """Per uplift column of ``pred`` with exposed test rows: (kind, arm, rows, outcome, treated, score).

    ``rows`` is the boolean mask of the test rows the arm is scored on (exposed to the arm, or
    the control arm), ``outcome`` / ``treated`` / ``score`` are numpy arrays over those rows.
    """
    if ARM not in test.columns or LABEL_CONVERTED not in test.columns:
        return
    exposed = test[ARM].notna() & test[LABEL_CONVERTED].notna()
    control = exposed & test[IS_CONTROL].fillna(False).astype(bool)
    for kind in UPLIFT_KINDS:
        for col in [c for c in pred.columns if c.startswith(f"uplift_{kind}:")]:
            arm = col.split(":", 1)[1]
            rows = (exposed & (test[ARM] == arm)) | control
            if not rows.any():
                continue
            y = test.loc[rows, UPLIFT_OUTCOME[kind]].astype(float).fillna(0.0).to_numpy()
            t = (test.loc[rows, ARM] == arm).astype(int).to_numpy()
            s = pred.loc[rows, col].astype(float).to_numpy()
            yield kind, arm, rows.to_numpy(), y, t, s


def _uplift_metrics(test: pd.DataFrame, pred: pd.DataFrame, *, top_share: float) -> dict[str, float]:
    out: dict[str, float] = {}
    per_kind: dict[str, list[dict[str, float]]] = {k: [] for k in UPLIFT_KINDS}
    for kind, arm, _, y, t, s in uplift_arm_rows(test, pred):
        vals = {"qini": _safe(M.qini_coefficient, y, t, s), "auuc": _safe(M.auuc, y, t, s),
                "uplift_at_k": _safe(M.uplift_at_k, y, t, s, k=top_share)}
        vals = {k: v for k, v in vals.items() if v is not None}
        out.update({f"{k}_{kind}[{arm}]": v for k, v in vals.items()})
        per_kind[kind].append(vals)
    for kind, rows in per_kind.items():
        for name in ("qini", "auuc", "uplift_at_k"):
            values = [r[name] for r in rows if name in r]
            if values:
                out[f"{name}_{kind}"] = float(np.mean(values))
    return out


def _truth_metrics(test: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    if TRUE_EXPECTED_SPEND in test.columns and EXPECTED_VALUE in pred.columns:
        truth = test[TRUE_EXPECTED_SPEND].astype(float).fillna(0.0)
        out["value_truth_pearson"] = _safe(M.pearson, truth, pred[EXPECTED_VALUE])
        out["value_truth_spearman"] = _safe(M.spearman, truth, pred[EXPECTED_VALUE])
    for kind in UPLIFT_KINDS:
        for col in [c for c in pred.columns if c.startswith(f"uplift_{kind}:")]:
            arm = col.split(":", 1)[1]
            true_col = true_uplift_column(kind, arm)
            if true_col in test.columns:
                known = test[true_col].notna()
                if known.sum() > 2:
                    out[f"uplift_{kind}_truth_pearson[{arm}]"] = _safe(
                        M.pearson, test.loc[known, true_col].astype(float), pred.loc[known, col].astype(float))
    return {k: v for k, v in out.items() if v is not None}


def labelled_tasks(test: pd.DataFrame) -> dict[str, bool]:
    """Which tasks have labels on these test rows.

    Value and churn need a purchase in the label window by at least one test user: without one
    (a campaign export with observed outcomes and no orders, an order log that ends before the
    window) every user looks churned with no spend, and churn PR-AUC 1.0 / ECE 0.0 would say
    nothing. Uplift needs a test user with a campaign exposure and an outcome.
    """
    bought = LABEL_CHURNED in test.columns and bool((test[LABEL_CHURNED].astype(float) == 0).any())
    exposed = ARM in test.columns and LABEL_CONVERTED in test.columns and bool(
        (test[ARM].notna() & test[LABEL_CONVERTED].notna()).any())
    return {VALUE: bought, CHURN: bought, UPLIFT: exposed}


def unlabelled_reason(tasks: Sequence[str], labelled: dict[str, bool]) -> Optional[str]:
    """Why a method predicting `tasks` has nothing to be scored against on a split, or None."""
    if any(labelled.get(t, True) for t in tasks):
        return None
    if UPLIFT in tasks and len(tasks) == 1:
        return "no campaigns: no test user has a campaign exposure in the label window"
    return "value and churn have no labels on this split (no test user bought in the label window)"


def evaluate_predictions(test: pd.DataFrame, pred: pd.DataFrame, *, uplift_top_share: float = 0.2,
                         bins: int = 10, labelled: Optional[dict[str, bool]] = None) -> dict[str, float]:
    """Every metric the predictions allow, against the labels (and truth) of the test rows.

    ``pred`` is aligned row by row with ``test``. Value metrics need ``expected_value``,
    churn metrics ``churn_probability``, uplift metrics ``uplift_<kind>:<arm>`` columns.
    Metrics undefined on the data (e.g. a single class) are left out, and so are the value and
    churn metrics when ``labelled`` (see :func:`labelled_tasks`) says those tasks have no labels.
    """
    labelled = labelled if labelled is not None else dict.fromkeys(TASKS, True)
    out: dict[str, Optional[float]] = {}
    if EXPECTED_VALUE in pred.columns and labelled.get(VALUE, True):
        actual = test[LABEL_VALUE].astype(float).clip(lower=0.0).to_numpy()
        predicted = pred[EXPECTED_VALUE].astype(float).to_numpy()
        out["value_gini"] = _safe(M.normalized_gini, actual, predicted)
        out["value_decile_mape"] = _safe(M.decile_mape, actual, predicted, bins)
        out["value_spearman"] = _safe(M.spearman, actual, predicted)
        out["value_total_ratio"] = float(predicted.sum() / actual.sum()) if actual.sum() > 0 else None
    if CHURN_PROBABILITY in pred.columns and labelled.get(CHURN, True):
        churned = test[LABEL_CHURNED].astype(int).to_numpy()
        prob = pred[CHURN_PROBABILITY].astype(float).to_numpy()
        out["churn_auc"] = _safe(M.roc_auc, churned, prob)
        out["churn_pr_auc"] = _safe(M.average_precision, churned, prob)
        out["churn_ece"] = _safe(M.expected_calibration_error, churned, prob, bins)
    out.update(_uplift_metrics(test, pred, top_share=uplift_top_share))
    out.update(_truth_metrics(test, pred))
    return {k: v for k, v in out.items() if v is not None}


def resampled_metrics(test: pd.DataFrame, pred: pd.DataFrame, counts: np.ndarray, *, uplift_top_share: float = 0.2,
                      bins: int = 10, labelled: Optional[dict[str, bool]] = None,
                      cache: Optional[dict] = None) -> dict[str, np.ndarray]:
    """The bootstrapped metrics of :func:`evaluate_predictions` on a block of resamples of the test users.

    ``counts`` is a (B, n) matrix: how often each test row is drawn in each resample (see
    bootstrap.resample_counts). Returns metric -> (B,) values (NaN where a resample leaves the
    metric undefined); row b equals :func:`evaluate_predictions` on the test rows drawn by
    resample b, in row order. ``cache`` (a dict the caller keeps across methods) holds what
    depends on the counts and labels only (the perfect Gini, the ranks of the actual values).
    """
    labelled = labelled if labelled is not None else dict.fromkeys(TASKS, True)
    w = np.asarray(counts, dtype=np.float64)
    if cache is None or cache.get("counts") is not counts:
        cache = {} if cache is None else cache
        cache.clear()
        cache["counts"] = counts
    out: dict[str, np.ndarray] = {}
    if EXPECTED_VALUE in pred.columns and labelled.get(VALUE, True):
        actual = test[LABEL_VALUE].astype(float).clip(lower=0.0).to_numpy()
        predicted = pred[EXPECTED_VALUE].astype(float).to_numpy()
        if "best_gini" not in cache:
            cache["best_gini"] = B.weighted_gini(w, actual, actual)
            cache["actual_ranks"] = B.weighted_ranks(w, actual)
        out["value_gini"] = B.weighted_normalized_gini(w, actual, predicted, best=cache["best_gini"])
        out["value_decile_mape"] = B.weighted_decile_mape(w, actual, predicted, bins)
        out["value_spearman"] = B.weighted_spearman(w, actual, predicted, x_ranks=cache["actual_ranks"])
        out["value_total_ratio"] = B.weighted_total_ratio(w, actual, predicted)
    if CHURN_PROBABILITY in pred.columns and labelled.get(CHURN, True):
        churned = test[LABEL_CHURNED].astype(int).to_numpy().astype(float)
        prob = pred[CHURN_PROBABILITY].astype(float).to_numpy()
        out["churn_auc"] = B.weighted_roc_auc(w, churned, prob)
        out["churn_pr_auc"] = B.weighted_average_precision(w, churned, prob)
        if np.all((prob >= 0) & (prob <= 1)):
            out["churn_ece"] = B.weighted_ece(w, churned, prob, bins)
    per_kind: dict[tuple[str, str], list[np.ndarray]] = {}
    for kind, arm, rows, y, t, s in uplift_arm_rows(test, pred):
        vals = B.weighted_uplift(w[:, rows], y, t.astype(np.float64), s, k=uplift_top_share)
        for name, v in vals.items():
            out[f"{name}_{kind}[{arm}]"] = v
            per_kind.setdefault((name, kind), []).append(v)
    for (name, kind), values in per_kind.items():
        stacked = np.vstack(values)
        defined = np.isfinite(stacked)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{name}_{kind}"] = np.where(defined.any(axis=0), np.nansum(stacked, axis=0) / defined.sum(axis=0),
                                             np.nan)
    return out


def split_margins(res: "SplitResult", metric_rows: Sequence[dict], *, resamples: int, seed: int,
                  uplift_top_share: float = 0.2, bins: int = 10, labelled: Optional[dict[str, bool]] = None,
                  reference: str = "model") -> list:
    """Paired-bootstrap margins of ``reference`` over every other method of a scored split.

    ``metric_rows`` are the split's metric rows (method, metric, value); see bootstrap.py for
    the margins and their rows.
    """
    full: dict[str, dict[str, float]] = {}
    for row in metric_rows:
        full.setdefault(row["method"], {})[row["metric"]] = float(row["value"])

    cache: dict = {}

    def samples_of(method: str, counts: np.ndarray) -> dict[str, np.ndarray]:
        return resampled_metrics(res.test, res.predictions[method], counts, uplift_top_share=uplift_top_share,
                                 bins=bins, labelled=labelled, cache=cache)

    return B.paired_margins(full, samples_of, len(res.test), reference=reference, resamples=resamples, seed=seed)


# --------------------------------------------------------------------------------------------
# the backtest
# --------------------------------------------------------------------------------------------
@dataclass
class SplitResult:
    split: Split
    test: pd.DataFrame                      # the test rows (labels, truth), row order of predictions
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> aligned predictions
    skipped: dict[str, str] = field(default_factory=dict)               # method -> why it did not run
    notes: list[str] = field(default_factory=list)                      # what the metrics of this split lack
    seconds: dict[str, float] = field(default_factory=dict)             # method -> fit + predict time
    n_train: int = 0
    margins: list = field(default_factory=list)                         # bootstrap.Margin of the model
    bootstrap_seconds: float = 0.0


@dataclass
class BacktestResult:
    dataset: str
    splits: list[SplitResult]
    metrics: pd.DataFrame                   # METRIC_COLUMNS

    def pivot(self) -> pd.DataFrame:
        """Metrics as a (split, metric) x method table."""
        return self.metrics.pivot_table(index=["split", "metric"], columns="method", values="value", aggfunc="first")


def _align(test: pd.DataFrame, pred: pd.DataFrame, method: str) -> pd.DataFrame:
    if USER_ID not in pred.columns:
        raise ValueError(f"{method}: predictions lack {USER_ID}")
    if pred[USER_ID].duplicated().any():
        raise ValueError(f"{method}: predictions hold duplicate users")
    aligned = test[[USER_ID]].merge(pred, on=USER_ID, how="left", validate="one_to_one")
    missing = aligned.drop(columns=[USER_ID]).isna().all(axis=1)
    if missing.any():
        raise ValueError(f"{method}: no prediction for {int(missing.sum())} test users")
    # a NaN score would make every metric of that column undefined: refuse the method instead
    # of scoring it on fewer users than the others
    numeric = aligned.drop(columns=[USER_ID]).select_dtypes(include="number")
    bad = {c: int((~np.isfinite(numeric[c].to_numpy(float))).sum()) for c in numeric.columns}
    bad = {c: k for c, k in bad.items() if k}
    if bad:
        raise ValueError(f"{method}: non-finite predictions (column: users) {bad}")
    return aligned


def skip_reason(exc: BaseException) -> str:
    """The one-line reason of a skip: the first non-blank line of the message, else the error's type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else f"{type(exc).__name__} (no message)"


def _oracle_shares(rows: list[dict]) -> list[dict]:
    oracle = {r["metric"]: r["value"] for r in rows if r["method"] == "oracle"}
    extra = []
    for r in rows:
        base = oracle.get(r["metric"])
        if (r["method"] != "oracle" and base and base > 0
                and r["metric"].startswith(ORACLE_SHARE_PREFIXES)):
            extra.append({**r, "metric": r["metric"] + "_share_of_oracle", "value": r["value"] / base})
    return extra


def run_backtest(examples: pd.DataFrame, splits: Sequence[Split], methods: Sequence, *, dataset: str,
                 uplift_top_share: float = 0.2, bins: int = 10, bootstrap_resamples: int = 0, bootstrap_seed: int = 0,
                 log=None) -> BacktestResult:
    """Fit every method on each split's train (or calibration) frame and score its test rows.

    Args:
        examples: examples frame (see the module docstring); features + labels per origin.
        splits: the splits, e.g. from :func:`rolling_splits`.
        methods: unfitted method objects (baselines.py, methods.py); each split gets a fresh
            copy. A method whose fit/predict raises ValueError (e.g. no campaign in the
            training rows) is skipped for that split and the reason kept.
        dataset: name written into the metrics (e.g. "cdnow", "synthetic", "lakehouse").
        bootstrap_resamples: paired-bootstrap resamples of the model's margins over every other
            method (0: none); their rows are added with method "model" (see bootstrap.py).
        bootstrap_seed: seed of the resample matrix.

    Returns:
        :class:`BacktestResult` with the long metrics table (dataset, split, method, metric, value).
    """
    log = log or get_logger("ulv_spark.evaluate")
    results, rows = [], []
    for split in splits:
        frames = partition(examples, split)
        res = SplitResult(split=split, test=frames.test, n_train=len(frames.train))
        labelled = labelled_tasks(frames.test)
        if not labelled[VALUE]:
            end = split.origin + dt.timedelta(days=split.horizon_days)
            res.notes.append(f"value and churn have no labels on this split: none of the {len(frames.test)} test "
                             f"users made a purchase in [{split.origin}, {end}), so no value or churn metric is "
                             "reported" + (" (the uplift metrics use the campaign's observed outcomes)"
                                           if labelled[UPLIFT] else ""))
            log.info("%s: %s", split.name, res.notes[-1])
        for prototype in methods:
            name = prototype.name
            unlabelled = unlabelled_reason(getattr(prototype, "tasks", TASKS), labelled)
            if unlabelled:
                res.skipped[name] = unlabelled
                log.info("%s on %s skipped: %s", name, split.name, unlabelled)
                continue
            started = time.perf_counter()
            try:
                # a method may pick split-specific state (the model trained before the origin)
                method = prototype.for_split(split) if hasattr(prototype, "for_split") else copy.deepcopy(prototype)
                if method.fits_on == "calibration":
                    method.fit(frames.calibration)
                elif method.fits_on == "train":
                    if frames.train.empty:
                        raise ValueError("no training rows for this split")
                    method.fit(frames.train)
                else:
                    method.fit(None)
                res.predictions[method.name] = _align(frames.test, method.predict(frames.test), method.name)
                res.seconds[method.name] = round(time.perf_counter() - started, 2)
            except ValueError as exc:
                res.skipped[name] = skip_reason(exc)
                # a method that does not apply to the data is expected; a failing one is worth a warning
                level = logging.INFO if isinstance(exc, NotApplicable) else logging.WARNING
                log.log(level, "%s on %s skipped: %s", name, split.name, res.skipped[name])
                continue
            metric_values = evaluate_predictions(frames.test, res.predictions[method.name],
                                                 uplift_top_share=uplift_top_share, bins=bins, labelled=labelled)
            rows.extend({"dataset": dataset, "split": split.name, "method": method.name, "metric": k,
                         "value": float(v)} for k, v in sorted(metric_values.items()))
        split_rows = [r for r in rows if r["split"] == split.name]
        if bootstrap_resamples > 0 and "model" in res.predictions:
            started = time.perf_counter()
            res.margins = split_margins(res, split_rows, resamples=bootstrap_resamples, seed=bootstrap_seed,
                                        uplift_top_share=uplift_top_share, bins=bins, labelled=labelled)
            res.bootstrap_seconds = round(time.perf_counter() - started, 2)
            log.info("%s: %d bootstrap margins of the model from %d resamples in %.1f s", split.name,
                     len(res.margins), bootstrap_resamples, res.bootstrap_seconds)
        rows.extend(_oracle_shares(split_rows))
        rows.extend({"dataset": dataset, "split": split.name, "method": "model", "metric": name, "value": value}
                    for margin in res.margins for name, value in margin.rows())
        log.info("backtest %s: %d test users, %d train rows, seconds per method %s", split.name,
                 len(frames.test), len(frames.train), res.seconds)
        results.append(res)
    metrics = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return BacktestResult(dataset=dataset, splits=results, metrics=metrics)
