"""Synthetic training_examples with a learnable signal, for tests and benchmarks of training.

Each example has a latent activity ``a ~ N(0, 1)`` that drives the tabular features (some
heavy-tailed, some with nulls, one irrelevant), the length and the token range of the event
sequence, the purchase probability and spend (ZILN-shaped), churn, and the campaign
response, where the treatment arms help active users more than the control. So a model that
learns anything beats the base rates on every head.

Dev tooling, not part of the installed package: tests (``from bench.train_data import ...``,
run from the repository root as ``python -m pytest``) and ``bench/bench_train.py`` use it.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

import numpy as np

FEATURE_NAMES = ("frequency", "recency_days", "monetary_value", "orders_90d", "noise_feature", "attr_flag")
DEFAULT_ARMS = ("control", "coupon_10", "free_shipping")
ARM_EFFECT = {"control": 0.0, "coupon_10": 0.8, "free_shipping": 0.4}


def synthetic_arrays(rows: int, *, seq_len: int = 8, vocab_size: int = 40, origins: int = 2,
                     arms: tuple[str, ...] = DEFAULT_ARMS, exposed_share: float = 0.6,
                     as_of: dt.date = dt.date(2025, 10, 1), horizon_days: int = 90, seed: int = 0) -> dict:
    """Column name -> numpy array (object arrays for dates/strings/sequences) of ``rows`` examples."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    origin_k = np.arange(rows) % max(origins, 1)
    origin_dates = np.array([as_of - dt.timedelta(days=horizon_days + 30 * int(k)) for k in origin_k], dtype=object)
    users = np.array([f"u{i // max(origins, 1):06d}" for i in range(rows)], dtype=object)

    frequency = np.floor(np.exp(0.8 * a + rng.normal(0, 0.3, rows))).astype(float)
    recency = np.clip(200 - 60 * a + rng.normal(0, 20, rows), 0, None)
    monetary = np.exp(3 + 0.4 * a + rng.normal(0, 0.3, rows))
    orders_90d = rng.poisson(np.exp(0.5 * a)).astype(float)
    orders_90d[rng.random(rows) < 0.1] = np.nan  # nulls are a fact of life in joined features
    noise = rng.normal(size=rows)
    flag = rng.random(rows) < 0.5

    lengths = np.clip(np.round(seq_len * (0.3 + 0.6 / (1 + np.exp(-a)))), 1, seq_len).astype(int)
    half = 4 + (vocab_size - 4) // 2
    low = rng.integers(4, half, size=(rows, seq_len))
    high = rng.integers(half, vocab_size, size=(rows, seq_len))
    tokens = np.where((a > 0)[:, None], high, low)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = np.where(mask == 1, tokens, 0).astype(np.int32)

    p_buy = 1 / (1 + np.exp(-(1.5 * a - 0.3)))
    bought = rng.random(rows) < p_buy
    value = np.where(bought, np.exp(3 + 0.5 * a + rng.normal(0, 0.5, rows)), 0.0)
    purchases = np.where(bought, 1 + rng.poisson(np.exp(0.3 * a)), 0)

    exposed = rng.random(rows) < exposed_share
    arm = np.where(exposed, rng.choice(np.array(arms, dtype=object), size=rows), None)
    effect = np.array([ARM_EFFECT.get(x, 0.3) * (ai > 0) if x is not None else 0.0 for x, ai in zip(arm, a)])
    converted = rng.random(rows) < 1 / (1 + np.exp(-(a - 0.5 + effect)))
    response = np.where(converted, np.exp(2.5 + 0.3 * a + rng.normal(0, 0.4, rows)), 0.0)
    return {
        "user_id": users, "as_of_date": np.array([as_of] * rows, dtype=object), "origin_date": origin_dates,
        "horizon_days": np.full(rows, horizon_days, dtype=np.int32),
        "frequency": frequency, "recency_days": recency, "monetary_value": monetary, "orders_90d": orders_90d,
        "noise_feature": noise, "attr_flag": flag,
        "seq_tokens": tokens, "seq_mask": mask,
        "label_value": value, "label_purchases": purchases.astype(np.int32),
        "label_churned": (~bought).astype(np.int32),
        "campaign_id": np.where(exposed, "camp_1", None).astype(object), "arm": arm,
        "is_control": np.where(exposed, arm == arms[0], None).astype(object),
        "label_converted": np.where(exposed, converted.astype(np.int32), None).astype(object),
        "label_response_value": np.where(exposed, response, None).astype(object),
        "latent_activity": a,
    }


TRAINING_EXAMPLES_DDL = (
    "user_id STRING, as_of_date DATE, origin_date DATE, horizon_days INT, frequency DOUBLE, recency_days DOUBLE, "
    "monetary_value DOUBLE, orders_90d DOUBLE, noise_feature DOUBLE, attr_flag BOOLEAN, seq_tokens ARRAY<INT>, "
    "seq_mask ARRAY<INT>, label_value DOUBLE, label_purchases INT, label_churned INT, campaign_id STRING, arm STRING, "
    "is_control BOOLEAN, label_converted INT, label_response_value DOUBLE, run_id STRING")


def synthetic_training_examples(spark, rows: int, *, partitions: Optional[int] = None, **kwargs):
    """A training_examples-shaped Spark DataFrame of :func:`synthetic_arrays` (plus run_id)."""
    import pandas as pd

    data = synthetic_arrays(rows, **kwargs)
    data.pop("latent_activity")
    frame = pd.DataFrame({
        **{k: v for k, v in data.items() if k not in ("seq_tokens", "seq_mask")},
        "seq_tokens": list(data["seq_tokens"]), "seq_mask": list(data["seq_mask"]),
        "label_converted": pd.array(data["label_converted"], dtype="Int32"),
        "label_response_value": pd.array(data["label_response_value"], dtype="Float64"),
        "is_control": pd.array(data["is_control"], dtype="boolean"),
        "run_id": "synthetic"})
    df = spark.createDataFrame(frame[[c.split()[0] for c in TRAINING_EXAMPLES_DDL.split(", ")]], TRAINING_EXAMPLES_DDL)
    return df.repartition(partitions) if partitions else df


def feed_arrays(data: dict, *, mean=None, std=None) -> tuple[dict, list[float], list[float]]:
    """Feed columns (see :mod:`ulv_spark.train.feed`) from :func:`synthetic_arrays`, in numpy.

    The numpy twin of ``feed.prepare_feed_frame`` for machines without Spark; statistics are
    computed from ``data`` unless given. Returns (columns, mean, std).
    """
    from ulv_spark.train.scaling import standardise

    raw = np.column_stack([np.asarray(data[name], dtype=np.float64) for name in FEATURE_NAMES])
    if mean is None:
        logged = np.sign(raw) * np.log1p(np.abs(raw))
        mean = np.nanmean(logged, axis=0).tolist()
        std = [s if s > 1e-9 else 1.0 for s in np.nanstd(logged, axis=0).tolist()]
    arms = list(DEFAULT_ARMS)
    arm_index = np.array([arms.index(a) if a in arms else -1 for a in data["arm"]], dtype=np.int32)
    exposed = arm_index >= 0
    rows = len(arm_index)
    columns = {
        "row_id": np.arange(rows, dtype=np.int64),
        "tokens": data["seq_tokens"].astype(np.int32), "mask": data["seq_mask"].astype(np.int32),
        "features": standardise(raw, mean, std),
        "y_value": data["label_value"].astype(np.float32),
        "y_churn": data["label_churned"].astype(np.float32),
        "y_converted": np.where(exposed, np.array([0 if v is None else v for v in data["label_converted"]]), 0).astype(np.float32),
        "y_response": np.where(exposed, np.array([0.0 if v is None else v for v in data["label_response_value"]]), 0.0).astype(np.float32),
        "arm_index": arm_index,
    }
    return columns, list(mean), list(std)


def label_statistics_arrays(columns: dict) -> dict[str, float]:
    """The numpy twin of the label base rates of ``feed.training_statistics`` on feed columns."""
    y, exposed = columns["y_value"].astype(np.float64), columns["arm_index"] >= 0
    response = columns["y_response"].astype(np.float64)[exposed]
    stats = {"p_purchase": float((y > 0).mean()), "p_churn": float(columns["y_churn"].mean())}
    if (y > 0).any():
        stats.update(log_mean=float(np.log(y[y > 0]).mean()), log_std=float(np.log(y[y > 0]).std()))
    if exposed.any():
        stats.update(p_converted=float(columns["y_converted"][exposed].mean()), p_response=float((response > 0).mean()))
    if (response > 0).any():
        stats.update(response_log_mean=float(np.log(response[response > 0]).mean()),
                     response_log_std=float(np.log(response[response > 0]).std()))
    return stats


def write_feed_files(columns: dict, path: str, *, files: int) -> int:
    """Write feed columns as ``files`` near-equal Parquet files (pyarrow only); returns rows written."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(path, exist_ok=True)
    rows = len(columns["row_id"])
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        arrays = {}
        for name, values in columns.items():
            chunk = values[part]
            if chunk.ndim == 2:
                arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), chunk.shape[1]).cast(
                    pa.list_(pa.from_numpy_dtype(chunk.dtype)))
            else:
                arrays[name] = pa.array(chunk)
        pq.write_table(pa.table(arrays), os.path.join(path, f"part-{i:05d}.parquet"))
    return rows


def write_synthetic_feed(root: str, rows: int, *, files: int = 4, val_rows: int = 0, seq_len: int = 8,
                         vocab_size: int = 40, seed: int = 0) -> str:
    """An exported feed directory (train/, val/, feed.json) of synthetic data, without Spark.

    The same layout ``ulv-spark train --export-feed`` writes, so torchrun_main and the
    benchmarks can run on machines that have torch but no Spark.
    """
    import json
    import os

    from ulv_spark.train.spec import ModelMeta

    data = synthetic_arrays(rows + val_rows, seq_len=seq_len, vocab_size=vocab_size, seed=seed)
    columns, mean, std = feed_arrays({k: v[:rows] for k, v in data.items()})
    write_feed_files(columns, os.path.join(root, "train"), files=files)
    if val_rows:
        val_columns, _, _ = feed_arrays({k: v[rows:] for k, v in data.items()}, mean=mean, std=std)
        val_columns["row_id"] = val_columns["row_id"] + rows
        write_feed_files(val_columns, os.path.join(root, "val"), files=max(1, min(files, val_rows)))
    meta = ModelMeta(version="", feature_columns=list(FEATURE_NAMES), feature_mean=mean, feature_std=std,
                     seq_len=seq_len, vocab_size=vocab_size, vocab_fingerprint="synthetic",
                     arms=list(DEFAULT_ARMS), arm_campaigns={a: "camp_1" for a in DEFAULT_ARMS},
                     horizon_days=90, trained_as_of="2025-10-01")
    with open(os.path.join(root, "feed.json"), "w", encoding="utf-8") as fh:
        json.dump({"meta": meta.to_dict(), "label_stats": label_statistics_arrays(columns),
                   "rows": {"train": rows, "val": val_rows}}, fh, indent=2)
    return root
