"""`ulv-spark segment --as-of D`: learned segments of D from user_embeddings and the night's scores.

Runs after `ulv-spark score` (the nightly's `segment` stage, right after `score`):
1. read the staged predictions of D (score_predictions: embedding, expected value, churn, arm
   values; one model_version) -- they must carry embeddings (score.write_embeddings);
2. the segmenter of that model_version under segments.model_dir: loaded when it exists, else
   fitted (k by silhouette on a seeded sample, see fit.py) and saved, its ids matched to the
   previously fitted segmenter's centroids (Hungarian, matching.py). So a retrain refits once
   and every other night only assigns: unchanged users keep their segment ids;
3. assign every user (on the executors), profile the segments (segment_profiles, names) and
   rewrite user_segments' partition D with learned_segment / learned_segment_name filled (the
   grid columns are copied unchanged), then segment_transitions vs the previous segmented
   night, and the latest_* views.
"""
from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ulv_spark import catalog, lake
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.names import CHURN_PROBABILITY, EXPECTED_VALUE
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import AS_OF_DATE, MODEL_VERSION, RUN_ID, USER_ID
from ulv_spark.segments import fit as segfit
from ulv_spark.segments.contracts import EMBEDDING, LEARNED_SEGMENT, LEARNED_SEGMENT_NAME
from ulv_spark.segments.inputs import segment_inputs
from ulv_spark.segments.profiles import segment_profiles, segment_transitions

log = get_logger("ulv_spark.segments")
SEGMENT_OUTPUTS = (catalog.USER_SEGMENTS.name, catalog.SEGMENT_PROFILES.name, catalog.SEGMENT_TRANSITIONS.name)


def _ref(ctx, name):
    return lake.table_ref(ctx.cfg.lakehouse, name)


def _need(ctx, name: str, hint: str):
    ref = _ref(ctx, name)
    if not lake.is_delta(ctx.spark, ref):
        raise JobFailed(f"table {ref.name} does not exist: {hint}")
    return ref


def read_predictions(ctx):
    """The staged predictions of D with embeddings; (rows, model_version, users). JobFailed otherwise."""
    spark, as_of = ctx.spark, ctx.as_of
    ref = _need(ctx, catalog.SCORE_PREDICTIONS.name, f"run `ulv-spark score --as-of {as_of}` first")
    preds = lake.read_table(spark, ref, as_of_date=as_of)
    if EMBEDDING not in preds.columns:
        raise JobFailed(f"{ref.name} has no embedding column: re-run `ulv-spark score --as-of {as_of}` "
                        f"with score.write_embeddings=true")
    stats = preds.agg(F.count(F.lit(1)).alias("rows"),
                      F.sum(F.when(F.col(EMBEDDING).isNull(), 1).otherwise(0)).alias("no_embedding"),
                      F.collect_set(MODEL_VERSION).alias("versions")).first()
    if not stats["rows"]:
        raise JobFailed(f"{ref.name} has no rows for {as_of}: run `ulv-spark score --as-of {as_of}` first")
    if stats["no_embedding"]:
        raise JobFailed(f"{stats['no_embedding']} of {stats['rows']} users of {as_of} have no embedding: "
                        f"re-run `ulv-spark score --as-of {as_of}` with score.write_embeddings=true")
    if len(stats["versions"]) != 1:
        raise JobFailed(f"{ref.name} of {as_of} mixes model versions {sorted(stats['versions'])}; re-run score")
    return preds, stats["versions"][0], int(stats["rows"])


def run_segment(ctx: JobContext) -> Summary:
    """Assign (fitting first when needed) the learned segments of ctx.as_of; returns the run summary."""
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    conf = cfg.segments
    preds, model_version, users = read_predictions(ctx)
    seg_ref = _need(ctx, catalog.USER_SEGMENTS.name, f"run `ulv-spark score --as-of {as_of}` first")
    inputs = segment_inputs(preds)
    path = segfit.segmenter_dir(conf.model_dir, model_version)
    loaded = segfit.load_segmenter(path)
    fitted = loaded is None
    if fitted:
        with stage("segment.fit", log) as info:
            previous = segfit.latest_other_info(conf.model_dir, model_version, as_of.isoformat())
            model, seg_info = segfit.fit_segmenter(inputs, users=users, conf=conf, model_version=model_version,
                                                   as_of=as_of.isoformat(), previous=previous, log=log)
            segfit.save_segmenter(model, seg_info, conf.model_dir)
            info.update(method=seg_info.method, k=seg_info.k, sample_users=seg_info.sample_users,
                        matched_to=seg_info.matched_to)
    else:
        model, seg_info = loaded
    with stage("segment.assign", log) as info:
        assigned = segfit.assign(model, seg_info, inputs)
        members = (assigned.join(preds.select(USER_ID, EXPECTED_VALUE, CHURN_PROBABILITY), USER_ID, "inner")
                   .persist(StorageLevel.MEMORY_AND_DISK))
        try:
            written = _write_outputs(ctx, members, seg_ref, model_version)
        finally:
            members.unpersist()
        info.update(users=users, segments=written[catalog.SEGMENT_PROFILES.name]["rows"])
    views = [lake.create_latest_view(spark, _ref(ctx, name)) for name in SEGMENT_OUTPUTS]
    return {"model_version": model_version, "fitted": fitted, "method": seg_info.method, "k": seg_info.k,
            "silhouette": seg_info.silhouettes.get(str(seg_info.k)), "segmenter_dir": path, "users": users,
            "tables": written, "views": views}


def _night(spark, ref, as_of):
    return lake.read_table(spark, ref, as_of_date=as_of)


def _write_outputs(ctx, members, seg_ref, model_version: str) -> dict:
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    uplift_ref = _ref(ctx, catalog.PROMO_UPLIFT.name)
    uplift = (_night(spark, uplift_ref, as_of) if lake.is_delta(spark, uplift_ref)
              else spark.createDataFrame([], "user_id string, arm string, uplift_value double"))
    feat_ref = _ref(ctx, catalog.USER_FEATURES.name)
    features = (_night(spark, feat_ref, as_of) if lake.is_delta(spark, feat_ref)
                else spark.createDataFrame([], "user_id string"))
    profiles = segment_profiles(members, uplift, features, risk_tiers=cfg.score.risk_tiers).persist()
    written = {}
    try:
        stamped = profiles.select(F.lit(as_of).alias(AS_OF_DATE), "*", F.lit(model_version).alias(MODEL_VERSION), F.lit(ctx.run_id).alias(RUN_ID))
        written[catalog.SEGMENT_PROFILES.name] = _write(ctx, catalog.SEGMENT_PROFILES, stamped)
        grid = _night(spark, seg_ref, as_of).drop(LEARNED_SEGMENT, LEARNED_SEGMENT_NAME)
        names = profiles.select(LEARNED_SEGMENT, F.col("name").alias(LEARNED_SEGMENT_NAME))
        rows = (grid.join(members.select(USER_ID, LEARNED_SEGMENT), USER_ID, "left")
                .join(F.broadcast(names), LEARNED_SEGMENT, "left"))
        # user_segments is read and rewritten in one job: materialise before replacing the partition
        rows = rows.localCheckpoint(eager=True)
        written[catalog.USER_SEGMENTS.name] = _write(ctx, catalog.USER_SEGMENTS, rows)
        written[catalog.SEGMENT_TRANSITIONS.name] = _write_transitions(ctx, seg_ref, members, model_version)
    finally:
        profiles.unpersist()
    return written


def _write_transitions(ctx, seg_ref, members, model_version: str) -> dict:
    spark, as_of = ctx.spark, ctx.as_of
    table = lake.read_table(spark, seg_ref)
    previous_date = (table.where((F.col(AS_OF_DATE) < F.lit(as_of)) & F.col(LEARNED_SEGMENT).isNotNull())
                     .agg(F.max(AS_OF_DATE)).first()[0])
    if previous_date is None:
        moves = spark.createDataFrame([], "from_segment int, to_segment int, users bigint")
        previous_date = as_of
    else:
        previous = table.where(F.col(AS_OF_DATE) == F.lit(previous_date)).select(USER_ID, LEARNED_SEGMENT)
        moves = segment_transitions(previous, members.select(USER_ID, LEARNED_SEGMENT))
    stamped = moves.select(F.lit(as_of).alias(AS_OF_DATE), F.lit(previous_date).alias("previous_as_of_date"), "*",
                           F.lit(model_version).alias(MODEL_VERSION), F.lit(ctx.run_id).alias(RUN_ID))
    out = _write(ctx, catalog.SEGMENT_TRANSITIONS, stamped)
    out["previous_as_of_date"] = None if previous_date == as_of else previous_date.isoformat()
    return out


def _write(ctx, contract, df) -> dict:
    spark, as_of = ctx.spark, ctx.as_of
    ref = _ref(ctx, contract.name)
    try:
        with stage(f"segment.write.{contract.name}", log) as info:
            lake.write_partition(spark, df, ref, contract, as_of=as_of)
            rows = int(lake.last_operation_metrics(spark, ref).get("numOutputRows", 0))
            info.update(rows=rows)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise JobFailed(f"writing {ref.name} for {as_of} failed ({type(exc).__name__}: "
                        f"{text[0] if text else ''}); re-run `ulv-spark segment --as-of {as_of}`") from exc
    return {"table": ref.name, "version": lake.current_version(spark, ref), "rows": rows}

