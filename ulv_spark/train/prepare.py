"""The driver's half of a run before any rank starts: profile, split, statistics, feed materialisation.

Only aggregates reach the driver (row counts, sequence lengths, distinct origins and arms,
feature and label statistics); the rows go to Petastorm's cache or to Parquet under
``train.parquet_dir/<run key>``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ulv_spark import schemas as S
from ulv_spark.runtime import get_logger
from ulv_spark.train import feed as feeds
from ulv_spark.train.spec import ModelMeta, ModelSpec, model_spec

LOG_NAME = "ulv_spark.train"
# train conf keys that do not change what is learned: how rows travel, where things are kept,
# when to stop this invocation. A run stopped with one loader may resume with the other.
VOLATILE_TRAIN_KEYS = ("stop_after_epochs", "resume", "mlflow_tracking_uri", "mlflow_registry_uri", "mlflow_experiment",
                       "registered_model_name", "retrain_every_days", "loader",
                       "reader_workers", "cpu_threads", "model_dir", "checkpoint_dir", "petastorm_cache",
                       "parquet_dir")


def run_key(as_of, data_version, train_cfg, feature_columns: list[str]) -> str:
    """Checkpoint directory name: same data + same training conf = same run (so it can resume)."""
    settings = dataclasses.asdict(train_cfg)
    for volatile in VOLATILE_TRAIN_KEYS:
        settings.pop(volatile, None)
    blob = json.dumps({"as_of": str(as_of), "data_version": data_version, "train": settings,
                       "features": feature_columns}, sort_keys=True, default=str)
    return f"{as_of}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def profile_examples(examples, *, seq_len: int, horizon_days: int, log=None) -> dict:
    """Check the examples in one aggregate; returns rows, horizon_days, the distinct origins (few) and
    text_dims (per-event text components of seq_text; 0 when no row has any).

    Raises:
        ValueError: no rows, or seq_tokens / seq_mask not all of length ``seq_len``.
    """
    from pyspark.sql import functions as F

    has_text = S.SEQ_TEXT in examples.columns
    text_aggs = ([F.count(F.col(S.SEQ_TEXT)).alias("text_rows"), F.max(F.size(S.SEQ_TEXT)).alias("text_hi"),
                  F.min(F.when(F.col(S.SEQ_TEXT).isNotNull(), F.size(S.SEQ_TEXT))).alias("text_lo")]
                 if has_text else [])
    row = examples.agg(
        *text_aggs,
        F.count(F.lit(1)).alias("rows"), F.min(F.size(S.SEQ_TOKENS)).alias("lo"), F.max(F.size(S.SEQ_TOKENS)).alias("hi"),
        F.sum((F.size(S.SEQ_MASK) != F.size(S.SEQ_TOKENS)).cast("int")).alias("bad"),
        F.min(S.HORIZON_DAYS).alias("h_lo"), F.max(S.HORIZON_DAYS).alias("h_hi"),
        F.collect_set(S.ORIGIN_DATE).alias("origins")).first()
    if not row["rows"]:
        raise ValueError("no training_examples rows for this as_of date: run `ulv-spark features` for it first")
    if row["lo"] != seq_len or row["hi"] != seq_len or (row["bad"] or 0) > 0:
        raise ValueError(f"{S.SEQ_TOKENS} / {S.SEQ_MASK} must all have length {seq_len} "
                         f"(features.sequence_length); found lengths {row['lo']}..{row['hi']}")
    horizon = horizon_days
    if row["h_lo"] is not None and row["h_lo"] == row["h_hi"]:
        horizon = int(row["h_lo"])
        if horizon != horizon_days and log is not None:
            log.warning("training_examples has horizon_days=%d, conf run.horizon_days=%d: the model keeps %d",
                        horizon, horizon_days, horizon)
    text_dims = 0
    if has_text and row["text_rows"]:
        if row["text_lo"] != row["text_hi"] or row["text_hi"] % seq_len:
            raise ValueError(f"{S.SEQ_TEXT} must all have length {seq_len} x features.text_dims; "
                             f"found lengths {row['text_lo']}..{row['text_hi']}")
        text_dims = int(row["text_hi"]) // seq_len
    return {"rows": int(row["rows"]), "horizon_days": horizon, "origins": sorted(row["origins"]),
            "text_dims": text_dims}


def origin_quotas(counts: dict, max_rows: int) -> dict:
    """Rows to keep per origin so that they add up to ``min(max_rows, total)``, proportional to `counts`.

    Largest remainder: each origin gets floor(max_rows * n / total), and the rows left over go
    one each to the origins with the largest fractional parts (ties: the earlier origin).
    """
    total = sum(counts.values())
    if total <= max_rows:
        return dict(counts)
    exact = {o: max_rows * n / total for o, n in counts.items()}
    quotas = {o: int(v) for o, v in exact.items()}
    left = max_rows - sum(quotas.values())
    for origin in sorted(exact, key=lambda o: (-(exact[o] - quotas[o]), str(o)))[:left]:
        quotas[origin] += 1
    return quotas


def sample_per_origin(examples, quotas: dict, *, seed: int):
    """The first ``quotas[origin]`` rows of each origin in the order of a seeded hash of the user.

    Grain: unchanged (a subset of the rows). The same seed keeps the same users, and since the
    hash is of the user alone, a user kept at one origin tends to be kept at the others.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not quotas:
        return examples
    quota = F.lit(None).cast("long")
    for origin, n in quotas.items():
        quota = F.when(F.col(S.ORIGIN_DATE) == F.lit(origin), F.lit(int(n))).otherwise(quota)
    order = Window.partitionBy(S.ORIGIN_DATE).orderBy(F.xxhash64(S.USER_ID, F.lit(int(seed))), S.USER_ID) \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ranked = examples.withColumn("_sample_rank", F.row_number().over(order))
    return ranked.filter(F.col("_sample_rank") <= F.coalesce(quota, F.lit(0))).drop("_sample_rank")


def cap_examples(examples, *, rows: int, max_rows: Optional[int], seed: int, log=None):
    """(examples, sample facts or None): at most `max_rows` rows, stratified by origin (train.max_rows).

    Only the per-origin row counts reach the driver. The facts say why and how many rows were
    kept per origin; they go into the train summary as ``train_sample``.
    """
    from pyspark.sql import functions as F

    if max_rows is None or rows <= max_rows:
        return examples, None
    counts = {r[S.ORIGIN_DATE]: int(r["n"]) for r in
              examples.groupBy(S.ORIGIN_DATE).agg(F.count(F.lit(1)).alias("n")).collect()}
    quotas = origin_quotas(counts, max_rows)
    facts = {"reason": f"training_examples has {rows} rows, more than train.max_rows = {max_rows}: kept a seeded "
                       "hash sample of users, the same share of every origin",
             "rows_before": rows, "rows_after": sum(quotas.values()), "max_rows": max_rows, "seed": seed,
             "per_origin": {str(o): {"rows": counts[o], "kept": quotas[o]} for o in sorted(counts)}}
    if log is not None:
        log.info("train.max_rows: %s", facts["reason"])
    return sample_per_origin(examples, quotas, seed=seed), facts


@dataclass(frozen=True)
class PreparedFeed:
    """The driver's half of a run: feeds, model shapes and metadata, ready to train."""

    train: feeds.FeedSpec
    val: Optional[feeds.FeedSpec]
    model: ModelSpec
    meta: ModelMeta
    label_stats: dict
    validation_origins: list
    pretrain: Optional[feeds.FeedSpec] = None  # train split + extra sequences (None: pretrain on train)
    sample: Optional[dict] = None  # train.max_rows: why and how the training rows were sampled (None: all rows)

    def feeds(self) -> list:
        return [f for f in (self.train, self.val, self.pretrain) if f is not None]

    def rows(self) -> dict:
        """rows_train, rows_val, rows_pretrain (the pretraining rows are the train split's without a feed of their own)."""
        return {"rows_train": self.train.rows, "rows_val": self.val.rows if self.val else 0,
                "rows_pretrain": (self.pretrain or self.train).rows, "train_sample": self.sample}

    def delete(self) -> None:
        """Remove every materialised feed."""
        for materialised in self.feeds():
            feeds.delete_feed(materialised)


def prepare(spark, examples, *, train_cfg, seq_len: int, vocab_size: int, vocab_fingerprint: str,
            horizon_days: int, as_of, key: str, loader: Optional[str] = None, world: int = 1,
            extra_sequences=None) -> PreparedFeed:
    """Split, compute statistics and arms, and materialise the feed for ``loader``.

    Only aggregates (statistics, distinct origins and arms) reach the driver; the rows go to
    Petastorm's cache or to Parquet under ``train.parquet_dir/<key>``. ``extra_sequences``
    (user_features rows of the run date: every current user, new ones included) are added to
    the training split's sequences as a separate pretraining feed.
    """
    loader = loader or train_cfg.loader
    feature_cols = S.feature_columns(examples.schema)
    if not feature_cols:
        raise ValueError("training_examples has no numeric tabular feature column")
    profile = profile_examples(examples, seq_len=seq_len, horizon_days=horizon_days, log=get_logger(LOG_NAME))
    examples, sample = cap_examples(examples, rows=profile["rows"], max_rows=train_cfg.max_rows, seed=train_cfg.seed,
                                    log=get_logger(LOG_NAME))
    train_df, val_df, val_origins = feeds.split_examples(examples, method=train_cfg.validation_split,
                                                         validation_share=train_cfg.validation_share,
                                                         origins=profile["origins"])
    stats = feeds.training_statistics(train_df, feature_cols)
    # the arm catalogue comes from every training row (before the split); each arm must be learnable
    arms, arm_campaigns = (feeds.arms_from_exposures(feeds.exposure_rows(examples)) if val_df is not None
                           else (stats.arms, stats.arm_campaigns))
    feeds.check_arms_learnable(arms, arm_campaigns, stats.arms, split=train_cfg.validation_split)
    meta = ModelMeta(version="", feature_columns=feature_cols, feature_mean=stats.feature_mean,
                     feature_std=stats.feature_std, seq_len=seq_len, vocab_size=vocab_size,
                     vocab_fingerprint=vocab_fingerprint, arms=arms, arm_campaigns=arm_campaigns,
                     horizon_days=int(profile["horizon_days"]), trained_as_of=str(as_of))
    model = model_spec(train_cfg, vocab_size=vocab_size, seq_len=seq_len, n_features=len(feature_cols),
                       n_arms=len(arms), text_dims=profile["text_dims"])
    files = train_cfg.feed_files or 4 * world
    frame_kw = dict(feature_columns=feature_cols, mean=stats.feature_mean, std=stats.feature_std, arms=arms,
                    seq_len=seq_len, text_dims=model.text_dims)
    frames = {"train": feeds.prepare_feed_frame(train_df, **frame_kw)}
    if val_df is not None:
        frames["val"] = feeds.prepare_feed_frame(val_df, **frame_kw)
    if extra_sequences is not None:
        frames["pretrain"] = (
            feeds.sequence_feed_frame(train_df, key_columns=[S.USER_ID, S.ORIGIN_DATE], seq_len=seq_len)
            .unionByName(feeds.sequence_feed_frame(extra_sequences, key_columns=[S.USER_ID, S.AS_OF_DATE],
                                                   seq_len=seq_len)))
    built: dict[str, feeds.FeedSpec] = {}
    root = Path(train_cfg.parquet_dir) / key
    for name, frame in frames.items():
        if loader == "petastorm":
            built[name] = feeds.make_petastorm_feed(spark, frame, cache_dir=train_cfg.petastorm_cache, files=files)
        else:
            built[name] = feeds.write_arrow_feed(frame, str(root / name), files=files)
    if loader == "arrow":
        (root / feeds.FEED_META_FILE).write_text(json.dumps({
            "meta": meta.to_dict(), "model": model.to_dict(), "label_stats": stats.labels,
            "validation_origins": val_origins, "rows": {k: v.rows for k, v in built.items()}}, indent=2),
            encoding="utf-8")
    val = built.get("val")
    return PreparedFeed(train=built["train"], val=val if val is not None and val.rows > 0 else None, model=model,
                        meta=meta, label_stats=stats.labels, validation_origins=val_origins,
                        pretrain=built.get("pretrain"), sample=sample)
