"""`ulv-spark score --as-of D`: write user_value, user_churn, promo_uplift and user_segments for D.

Steps, each logged as a stage:
1. resolve the model (score.model_version, else the newest under train.model_dir) and check it
   fits user_features of D (feature columns, sequence length, token vocabulary, one row per
   user) -- a mismatch fails here, before anything is written;
2. score every user once through the pandas UDF into the staging table `score_predictions`
   (replaceWhere D), then read that exact Delta version back, so the four tables derive from
   the same rows and a re-run of D replaces them with identical content;
3. write the four tables (each its own Delta transaction, replacing partition D) and the
   `latest_*` views. A failing table is named in the error together with the tables already
   written; tables not yet written keep their previous version;
4. with score.write_embeddings (default), write `user_embeddings` (partition D) from the same
   staged rows: the encoder's pooled vector of each user, captured in the scoring pass itself.
   user_segments' learned_segment columns stay null here: `ulv-spark segment` fills them.

`stage_predictions(ctx)` (steps 1-2) and `publish(ctx, staged)` (step 3) are separate so the
nightly job can gate on the staged predictions before any output table is replaced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ulv_spark import catalog, lake, registry
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.names import ARM_CONVERSION, ARM_VALUE, EXPECTED_VALUE, SCALAR_OUTPUTS
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import AS_OF_DATE, MODEL_VERSION, RUN_ID, SEQ_MASK, SEQ_TOKENS, USER_ID
from ulv_spark.score import tables, udf
from ulv_spark.score.predict import EMBEDDING, compatibility_problems
from ulv_spark.segments.contracts import LEARNED_SEGMENT, LEARNED_SEGMENT_NAME

SCORE_TABLES = catalog.names(catalog.SCORES)  # written in this order, one Delta transaction each
log = get_logger("ulv_spark.score")


@dataclass(frozen=True)
class StagedScores:
    """Predictions for one date in the staging table, checked, not yet published."""

    model_dir: str
    meta: object                # train.artifacts.ModelMeta
    users: int
    predictions: object  # DataFrame: the staged rows of the date at `staging_version`
    staging_version: int
    cut_points: tuple = ()  # expected_value cut points splitting the decile ranking into buckets


def run_score(ctx: JobContext) -> Summary:
    """Score every user of user_features for ctx.as_of; returns the run summary."""
    return publish(ctx, stage_predictions(ctx))


def stage_predictions(ctx) -> StagedScores:
    """Check the model against the features, then score every user into the staging table.

    Nothing user-facing is written yet, so the nightly job can gate on the predictions
    (score distribution shift) before :func:`publish` replaces the output tables.
    """
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    model_dir = resolve_model_dir(cfg.train.model_dir, registry.registered_model_dir(cfg, cfg.score.model_version))
    with stage("score.check", log) as info:
        meta = _load_meta(model_dir)
        features = _read_features(spark, cfg.lakehouse, as_of)
        users = check_features(features, meta, _vocabulary_fingerprint(cfg.features), as_of,
                               text_dims=_model_text_dims(model_dir))
        info.update(model_version=meta.version, users=users)
    if meta.horizon_days != cfg.run.horizon_days:
        log.warning("model horizon %s days differs from run.horizon_days=%s; tables use the model's",
                    meta.horizon_days, cfg.run.horizon_days)
    unknown_costs = sorted(set(cfg.score.arm_costs) - set(meta.arms))
    if unknown_costs:
        log.warning("score.arm_costs names arm(s) the model does not have: %s", unknown_costs)
    predictions, staging_version, cuts = _predict(ctx, features, model_dir, meta, users)
    return StagedScores(model_dir, meta, users, predictions, staging_version, cuts)


def publish(ctx, staged: StagedScores) -> dict:
    """Write the four output tables for the date from the staged predictions, and the views."""
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    meta, model_dir, users = staged.meta, staged.model_dir, staged.users
    with stage("score.tables", log) as info:
        written = _write_tables(ctx, staged.predictions, meta, staged.cut_points)
        info.update(tables=len(written))
    views_of = list(SCORE_TABLES)
    if cfg.score.write_embeddings:
        written[catalog.USER_EMBEDDINGS.name] = _write_embeddings(ctx, staged.predictions, meta)
        views_of.append(catalog.USER_EMBEDDINGS.name)
    try:
        views = [lake.create_latest_view(spark, lake.table_ref(cfg.lakehouse, name)) for name in views_of]
    except Exception as exc:
        raise JobFailed(f"all four tables were written for {as_of}, but creating the latest_* views failed "
                        f"({_first_line(exc)})") from exc
    return {"model_version": meta.version, "model_dir": model_dir, "users": users,
            "horizon_days": meta.horizon_days, "arms": list(meta.arms), "staging_version": staged.staging_version,
            "tables": written, "views": views, "batch_size": cfg.score.batch_size, "use_gpu": cfg.score.use_gpu}


def resolve_model_dir(model_root: str, model_version) -> str:
    """The model directory: `model_version` (a name under `model_root`, or a path), else the newest."""
    from ulv_spark.train.artifacts import latest_model_dir

    if model_version is None:
        found = latest_model_dir(model_root)
        if not found:
            raise JobFailed(f"no trained model under {model_root}: run `ulv-spark train` first "
                            f"or set score.model_version")
        return str(found)
    candidate = str(model_version)
    if not (os.path.isabs(candidate) or "://" in candidate):
        candidate = os.path.join(model_root, candidate)
    if not os.path.isdir(candidate):
        raise JobFailed(f"score.model_version={model_version!r}: no model directory at {candidate}")
    return candidate


def _load_meta(model_dir: str):
    from ulv_spark.train.artifacts import load_model

    try:
        return load_model(model_dir, device="cpu")[1]
    except Exception as exc:  # noqa: BLE001 - any load error means the same thing to the user
        raise JobFailed(f"cannot load the model at {model_dir}: {type(exc).__name__}: {exc}") from exc


def _vocabulary_fingerprint(features_cfg) -> str:
    from ulv_spark.features.sequences import vocabulary_fingerprint

    return vocabulary_fingerprint(features_cfg)


def _read_features(spark, lake_cfg, as_of):
    ref = lake.table_ref(lake_cfg, catalog.USER_FEATURES.name)
    if not lake.is_delta(spark, ref):
        raise JobFailed(f"table {ref.name} does not exist: run `ulv-spark features --as-of {as_of}` first")
    return lake.read_table(spark, ref, as_of_date=as_of)


def _model_text_dims(model_dir: str) -> int:
    """ModelSpec.text_dims of the model (0: no text fusion, or a model written before it)."""
    import json
    from pathlib import Path

    from ulv_spark.train.spec import ModelSpec

    path = Path(model_dir) / "model_spec.json"
    if not path.is_file():
        return 0
    return ModelSpec.from_dict(json.loads(path.read_text(encoding="utf-8"))).text_dims


def check_features(features, meta, vocab_fingerprint: str, as_of, text_dims: int = 0) -> int:
    """Number of users to score; JobFailed (nothing written yet) when the model does not fit them."""
    columns = dict(features.dtypes)
    problems = compatibility_problems(meta, columns=columns, seq_lengths=(None, None),
                                      vocab_fingerprint=vocab_fingerprint, text_dims=text_dims)
    if problems:
        raise JobFailed(_mismatch(meta, as_of, problems))
    sizes = [F.when(F.col(c).isNotNull(), F.size(c)) for c in (SEQ_TOKENS, SEQ_MASK)]
    stats = features.agg(F.count(F.lit(1)).alias("rows"), F.count_distinct(USER_ID).alias("users"),
                         F.least(*[F.min(s) for s in sizes]).alias("low"),
                         F.greatest(*[F.max(s) for s in sizes]).alias("high")).first()
    if stats["rows"] == 0:
        raise JobFailed(f"user_features has no rows for as_of_date {as_of}: run `ulv-spark features "
                        f"--as-of {as_of}` first; nothing was written")
    problems = compatibility_problems(meta, columns=columns, seq_lengths=(stats["low"], stats["high"]),
                                      vocab_fingerprint=vocab_fingerprint, text_dims=text_dims)
    if stats["users"] != stats["rows"]:
        problems.append(f"user_features has {stats['rows']} rows but {stats['users']} distinct users for {as_of}")
    if problems:
        raise JobFailed(_mismatch(meta, as_of, problems))
    return int(stats["users"])


def _mismatch(meta, as_of, problems) -> str:
    return (f"model {meta.version} does not fit user_features of {as_of}: " + "; ".join(problems)
            + ". Nothing was written (retrain the model or rebuild the features with the model's conf)")


def _predict(ctx, features, model_dir, meta, users: int):
    """Score into the staging table; return (its rows for the date at the written version, version, cut points)."""
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    ref = lake.table_ref(cfg.lakehouse, catalog.SCORE_PREDICTIONS.name)
    with stage("score.predict", log) as info:
        embeddings = cfg.score.write_embeddings
        scored = udf.score_users(features, model_dir=model_dir, feature_columns=list(meta.feature_columns),
                                 use_gpu=cfg.score.use_gpu, partitions=cfg.score.partitions, embeddings=embeddings)
        if not embeddings:
            scored = scored.withColumn(EMBEDDING, F.lit(None).cast("array<float>"))
        staged = scored.select("*", F.lit(as_of).alias(AS_OF_DATE), F.lit(meta.version).alias(MODEL_VERSION),
                               F.lit(ctx.run_id).alias(RUN_ID))
        try:
            with udf.arrow_batch_size(spark, cfg.score.batch_size):
                lake.write_partition(spark, staged, ref, catalog.SCORE_PREDICTIONS, as_of=as_of)
        except Exception as exc:
            raise JobFailed(f"scoring failed while writing {ref.name} ({_first_line(exc)}); "
                            f"no score table was written") from exc
        version = lake.current_version(spark, ref)
        info.update(users=users, batch_size=cfg.score.batch_size, staging_version=version)
    predictions = lake.read_table(spark, ref, version=version, as_of_date=as_of)
    cuts = _check_predictions(predictions, users, len(meta.arms), cfg.score.rank_buckets)
    return predictions, version, cuts


def _check_predictions(predictions, users: int, n_arms: int, buckets: int) -> tuple:
    """JobFailed unless there is one finite prediction per user; returns the decile bucket cut points.

    One pass computes both: the checks and `buckets - 1` approximate quantiles of expected_value
    (they only split the exact ranking into parallel buckets, so approximate is enough).
    """
    bad_value = None
    for col in SCALAR_OUTPUTS:
        cond = F.col(col).isNull() | F.isnan(col)
        bad_value = cond if bad_value is None else bad_value | cond
    bad_arms = (F.size(ARM_CONVERSION) != n_arms) | (F.size(ARM_VALUE) != n_arms)
    probs = [i / buckets for i in range(1, buckets)]
    quantiles = (F.percentile_approx(EXPECTED_VALUE, F.array(*[F.lit(p) for p in probs]), 1000) if probs
                 else F.array().cast("array<double>"))
    stats = predictions.agg(F.count(F.lit(1)).alias("rows"),
                            F.sum(F.when(bad_value, 1).otherwise(0)).alias("nan"),
                            F.sum(F.when(bad_arms, 1).otherwise(0)).alias("bad_arms"),
                            quantiles.alias("cuts")).first()
    if stats["rows"] != users or stats["nan"] or stats["bad_arms"]:
        raise JobFailed(f"predictions are unusable ({stats['rows']} rows for {users} users, {stats['nan']} with "
                        f"NaN/null outputs, {stats['bad_arms']} with arm arrays not of length {n_arms}); "
                        f"no score table was written")
    return tuple(float(c) for c in (stats["cuts"] or ()))


def _write_tables(ctx, predictions, meta, cuts) -> dict:
    """Write the four tables for the date, in order; JobFailed names the one that failed."""
    cfg = ctx.cfg
    # persisted: user_value and user_segments both need the deciles, which cost a ranking pass
    scored = tables.add_value_decile(predictions, cut_points=cuts).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _write_each(ctx, _table_frames(cfg, predictions, scored, meta),
                           commit_metadata={"job": "score", "model_version": meta.version, "run_id": ctx.run_id})
    finally:
        scored.unpersist()


def _table_frames(cfg, predictions, scored, meta) -> dict:
    """Table name -> DataFrame of the four score tables (lazy)."""
    horizon, tiers = meta.horizon_days, cfg.score.risk_tiers
    return {
        catalog.USER_VALUE.name: tables.user_value_table(scored, horizon_days=horizon),
        catalog.USER_CHURN.name: tables.user_churn_table(predictions, horizon_days=horizon, risk_tiers=tiers),
        catalog.PROMO_UPLIFT.name: tables.promo_uplift_table(predictions, arms=meta.arms,
                                                             arm_campaigns=meta.arm_campaigns,
                                                             margin=cfg.score.margin, arm_costs=cfg.score.arm_costs),
        # the learned segment columns are filled by `ulv-spark segment` (segments/job.py)
        catalog.USER_SEGMENTS.name: tables.user_segments_table(scored, risk_tiers=tiers).withColumns(
            {LEARNED_SEGMENT: F.lit(None).cast("int"), LEARNED_SEGMENT_NAME: F.lit(None).cast("string")}),
    }


def _write_each(ctx, frames: dict, commit_metadata: Optional[dict] = None) -> dict:
    """Write the tables in SCORE_TABLES order, one Delta transaction each; JobFailed names a failing one.

    Each commit's userMetadata names the job, model version and run (``DESCRIBE HISTORY``).
    """
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    written: dict = {}
    for name in SCORE_TABLES:
        df, contract = frames[name], catalog.contract(name)
        ref = lake.table_ref(cfg.lakehouse, name)
        try:
            with stage(f"score.write.{name}", log) as info:
                lake.write_partition(spark, df, ref, contract, as_of=as_of, commit_metadata=commit_metadata)
                metrics = lake.last_operation_metrics(spark, ref)
                written[name] = {"table": ref.name, "version": lake.current_version(spark, ref),
                                 "rows": int(metrics.get("numOutputRows", 0))}
                info.update(rows=written[name]["rows"])
        except Exception as exc:
            pending = [t for t in SCORE_TABLES if t not in written]
            raise JobFailed(
                f"writing {ref.name} for {as_of} failed ({_first_line(exc)}). Written by this run: "
                f"{list(written) or 'none'}; not written (previous versions stay readable): {pending}. "
                f"Re-run the date once the cause is fixed") from exc
    return written


def _write_embeddings(ctx, predictions, meta) -> dict:
    """user_embeddings for the date from the staged rows; its comment names the vectors' dimension."""
    spark, as_of = ctx.spark, ctx.as_of
    ref = lake.table_ref(ctx.cfg.lakehouse, catalog.USER_EMBEDDINGS.name)
    rows = predictions.select(USER_ID, AS_OF_DATE, EMBEDDING, MODEL_VERSION, RUN_ID)
    try:
        with stage(f"score.write.{catalog.USER_EMBEDDINGS.name}", log) as info:
            lake.write_partition(spark, rows, ref, catalog.USER_EMBEDDINGS, as_of=as_of)
            metrics = lake.last_operation_metrics(spark, ref)
            first = rows.select(F.size(EMBEDDING).alias("d")).limit(1).collect()
            dim = int(first[0]["d"]) if first else 0
            lake.set_table_comment(spark, ref, f"{catalog.USER_EMBEDDINGS.comment} Dimension {dim} "
                                          f"(model_version {meta.version}).")
            info.update(dimension=dim)
            return {"table": ref.name, "version": lake.current_version(spark, ref),
                    "rows": int(metrics.get("numOutputRows", 0)), "dimension": dim}
    except Exception as exc:
        raise JobFailed(f"writing {ref.name} for {as_of} failed ({_first_line(exc)}); the four score tables "
                        f"were written (set score.write_embeddings=false to skip embeddings)") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
