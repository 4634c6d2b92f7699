"""`ulv-spark embed`: product and review texts -> product_embeddings / review_embeddings, incrementally.

For each of the bronze tables `products` and `reviews` that exists (a missing one is skipped
with a line in the summary):

1. build the text per row in Spark SQL (products: title + '. ' + description; reviews: text),
   normalised and hashed (`text/normalise.py`);
2. keep the rows whose key is new, or whose text_hash (reviews: or rating) or encoder model_id
   differs from the stored row (left anti join on the embeddings table): a re-run finds none and
   embeds nothing;
3. embed each distinct text of those rows once through the pandas UDF (`text/udf.py`; persisted,
   so the model runs once per text even though the MERGE reads its source twice);
4. MERGE the rows into the embeddings table on its key.

With ``embed.finetune_layers > 0`` the encoder is first fine-tuned on the products' purchase
outcomes (`text/finetune.py`; once, then reused), and that encoder embeds every text.

Rows whose key has left the bronze table are kept (bronze tables are never deleted from).
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ulv_spark import lake
from ulv_spark.catalog import ORDER_LINES, ORDERS, PRODUCT_EMBEDDINGS, PRODUCTS, REVIEW_EMBEDDINGS, REVIEWS
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import TableContract
from ulv_spark.text import build, finetune
from ulv_spark.text.contracts import HAS_TEXT, TEXT_HASH, TRUNCATED
from ulv_spark.text.encoder import EncoderInfo, EncoderNotFound, describe_encoder
from ulv_spark.score.udf import resolve_device
from ulv_spark.text.udf import TEXT, embed_texts_df

log = get_logger("ulv_spark.text")


@dataclass(frozen=True)
class EmbedSpec:
    """One source table and the embeddings table built from it."""

    source: TableContract
    target: TableContract
    texts: Callable            # DataFrame -> DataFrame (build.product_texts / build.review_texts)
    tracked: tuple[str, ...]   # non-key columns whose change rewrites the row
    needs: tuple[str, ...]     # source columns the texts need

    @property
    def carried(self) -> list[str]:
        """Target columns before text_hash: the key and what is copied from the source."""
        names = self.target.column_names
        return names[:names.index(TEXT_HASH)]


SPECS = (
    EmbedSpec(PRODUCTS, PRODUCT_EMBEDDINGS, build.product_texts, (TEXT_HASH,),
              ("product_id", "title", "description")),
    EmbedSpec(REVIEWS, REVIEW_EMBEDDINGS, build.review_texts, (TEXT_HASH, "rating"),
              ("user_id", "product_id", "review_ts", "rating", "text")),
)
EMBED_TABLES = tuple(spec.target.name for spec in SPECS)


def run_embed(ctx: JobContext) -> Summary:
    """Embed the new or changed product and review texts; returns the run summary."""
    conf = ctx.cfg.embed
    try:
        info = describe_encoder(conf.encoder_dir, max_length=conf.max_length)
    except EncoderNotFound as exc:
        raise JobFailed(str(exc)) from None
    encoder_dir, finetuned = conf.encoder_dir, None
    if conf.finetune_layers:
        with stage("embed.finetune", log) as facts:
            encoder_dir, finetuned = finetuned_encoder(ctx, info)
            facts.update({k: finetuned[k] for k in ("how", "products") if k in finetuned})
        if encoder_dir != conf.encoder_dir:
            info = describe_encoder(encoder_dir, max_length=conf.max_length)
    summary: Summary = {"model_id": info.model_id, "encoder_dir": info.path, "max_length": info.max_length,
                        "dim": info.dim, "use_gpu": conf.use_gpu, "batch_size": conf.batch_size, "tables": {}}
    if finetuned is not None:
        summary["finetune"] = finetuned
    embedded_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    for spec in SPECS:
        with stage(f"embed.{spec.target.name}", log) as facts:
            result = embed_table(ctx, spec, info, embedded_at=embedded_at, encoder_dir=encoder_dir)
            facts.update({k: v for k, v in result.items() if k in ("texts_embedded", "rows_written", "skipped")})
        summary["tables"][spec.target.name] = result
    return summary


def _partitions(spark, configured: int) -> int:
    if configured > 0:
        return configured
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - no SparkContext (Spark Connect): keep the input's partitions
        return 0


def current_encoder_dir(cfg) -> Optional[str]:
    """The directory the night's texts are embedded with: the fine-tuned one when configured and fitted, else
    embed.encoder_dir (None = the packaged default)."""
    conf = cfg.embed
    if conf.finetune_layers:
        base = describe_encoder(conf.encoder_dir, max_length=conf.max_length)
        path = finetune.stored(conf.finetune_dir, base, conf.finetune_layers)
        if path is not None:
            return str(path)
    return conf.encoder_dir


def finetuned_encoder(ctx: JobContext, base: EncoderInfo) -> tuple[Optional[str], dict]:
    """(encoder dir, facts): the stored fine-tuned encoder, else one fitted now, else the base one (with a reason)."""
    from ulv_spark.features.text import purchase_outcomes

    spark, conf = ctx.spark, ctx.cfg.embed
    if "://" in conf.finetune_dir or conf.finetune_dir.startswith("dbfs:"):
        raise JobFailed(f"embed.finetune_dir must be a local or mounted directory (transformers saves there), "
                        f"got {conf.finetune_dir}")
    path = finetune.stored(conf.finetune_dir, base, conf.finetune_layers)
    if path is not None:
        facts = json.loads((path / finetune.MARKER).read_text(encoding="utf-8"))
        return str(path), {"how": "stored", "path": str(path), "products": facts.get("products"),
                           "history_before": facts.get("history_before"), "best_epoch": facts.get("best_epoch")}
    refs = {name: lake.table_ref(ctx.cfg.lakehouse, name) for name in (ORDERS.name, ORDER_LINES.name, PRODUCTS.name)}
    absent = [ref.name for ref in refs.values() if not lake.is_delta(spark, ref)]
    if absent:
        log.warning("text fine-tune: no %s table; the shipped encoder is used", " / ".join(absent))
        return conf.encoder_dir, {"how": f"not fitted: no {' / '.join(absent)} table"}
    tables = {name: lake.read_table(spark, ref) for name, ref in refs.items()}
    outcomes = purchase_outcomes(tables[ORDERS.name], tables[ORDER_LINES.name], before=ctx.as_of,
                                 horizon_days=ctx.cfg.run.horizon_days)
    texts = build.product_texts(tables[PRODUCTS.name]).filter(F.col(TEXT) != F.lit("")).dropDuplicates(["product_id"])
    rows = (outcomes.join(texts, on="product_id", how="inner")
            .orderBy(F.col("lines").desc(), F.col("product_id"))
            .select("product_id", TEXT, "lines", "retained", "next_spend")
            .limit(conf.finetune_max_products).toPandas())  # one row per product, capped
    if len(rows) < finetune.MIN_PRODUCTS:
        log.warning("text fine-tune: %d products with text and purchase outcomes before %s (need %d); the shipped "
                    "encoder is used", len(rows), ctx.as_of, finetune.MIN_PRODUCTS)
        return conf.encoder_dir, {"how": f"not fitted: {len(rows)} products with outcomes (need "
                                         f"{finetune.MIN_PRODUCTS})", "products": len(rows)}
    rows = rows.sort_values("product_id", kind="stable").reset_index(drop=True)
    out = finetune.finetuned_dir(conf.finetune_dir, base, conf.finetune_layers)
    facts = finetune.fit(base, rows[TEXT].tolist(), rows[["retained", "next_spend"]].to_numpy(),
                         rows["lines"].to_numpy(), layers=conf.finetune_layers, epochs=conf.finetune_epochs,
                         lr=conf.finetune_lr, seed=ctx.cfg.train.seed, out_dir=out,
                         device=resolve_device(conf.use_gpu), product_ids=rows["product_id"].tolist(),
                         extra={"history_before": ctx.as_of.isoformat(), "run_id": ctx.run_id})
    return str(out), {"how": "fitted", "path": str(out), "products": facts["products"],
                      "history_before": ctx.as_of.isoformat(), "best_epoch": facts["best_epoch"],
                      "head_ridge": facts["head_ridge"], "history": facts["history"], "seconds": facts["seconds"]}


def embed_table(ctx: JobContext, spec: EmbedSpec, info: EncoderInfo, *, embedded_at: dt.datetime,
                encoder_dir: Optional[str] = None) -> dict:
    """Embed the pending rows of one source table and MERGE them; the table's summary facts."""
    spark, conf = ctx.spark, ctx.cfg.embed
    source_ref = lake.table_ref(ctx.cfg.lakehouse, spec.source.name)
    target_ref = lake.table_ref(ctx.cfg.lakehouse, spec.target.name)
    if not lake.is_delta(spark, source_ref):
        return {"skipped": f"no {spec.source.name} table ({source_ref.name}): nothing to embed"}
    source = lake.read_table(spark, source_ref)
    missing = [c for c in spec.needs if c not in source.columns]
    if missing:
        raise JobFailed(f"{source_ref.name} lacks column(s) {missing} of the {spec.source.name} contract")
    existing = lake.read_table(spark, target_ref) if lake.is_delta(spark, target_ref) else None
    keys = list(spec.target.keys)
    pending = build.pending_rows(spec.texts(source), existing, keys=keys, tracked=spec.tracked,
                                 model_id=info.model_id).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        source_rows = source.count()
        stats = pending.agg(F.count(F.lit(1)).alias("rows"),
                            F.sum(F.when(F.col(TEXT) == F.lit(""), 1).otherwise(0)).alias("empty")).first()
        pending_rows = int(stats["rows"])
        facts = {"table": target_ref.name, "source_rows": source_rows, "rows_skipped": source_rows - pending_rows,
                 "rows_written": 0, "rows_without_text": int(stats["empty"] or 0), "texts_embedded": 0,
                 "texts_truncated": 0, "embed_seconds": 0.0, "texts_per_s": None}
        if pending_rows == 0:
            facts["version"] = lake.current_version(spark, target_ref)
            return facts
        _check_unique(pending, keys, source_ref.name)
        facts.update(_embed_and_merge(ctx, spec, info, pending, embedded_at=embedded_at, encoder_dir=encoder_dir,
                                      partitions=_partitions(spark, conf.partitions)))
        facts["version"] = lake.current_version(spark, target_ref)
        return facts
    finally:
        pending.unpersist()


def _check_unique(pending, keys: list[str], table: str) -> None:
    dupes = pending.groupBy(*keys).count().filter(F.col("count") > 1).limit(3).collect()
    if dupes:
        shown = "; ".join(", ".join(f"{k}={row[k]}" for k in keys) for row in dupes)
        raise JobFailed(f"{table} has more than one row per key {keys} (e.g. {shown}); nothing was embedded")


def _embed_and_merge(ctx, spec: EmbedSpec, info: EncoderInfo, pending, *, embedded_at: dt.datetime,
                     encoder_dir: Optional[str], partitions: int) -> dict:
    spark, conf = ctx.spark, ctx.cfg.embed
    vectors = embed_texts_df(build.distinct_texts(pending), info=info, encoder_dir=encoder_dir,
                             use_gpu=conf.use_gpu, batch_size=conf.batch_size, partitions=partitions)
    vectors = vectors.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        start = time.perf_counter()
        counts = vectors.agg(F.sum(F.when(F.col(HAS_TEXT), 1).otherwise(0)).alias("texts"),
                             F.sum(F.when(F.col(TRUNCATED), 1).otherwise(0)).alias("truncated")).first()
        seconds = time.perf_counter() - start
        rows = build.embedding_rows(pending, vectors, key_columns=spec.carried, model_id=info.model_id,
                                    dim=info.dim, embedded_at=embedded_at, run_id=ctx.run_id)
        metrics = lake.merge(spark, rows, lake.table_ref(ctx.cfg.lakehouse, spec.target.name), spec.target)
    finally:
        vectors.unpersist()
    written = int(metrics.get("numTargetRowsInserted", 0)) + int(metrics.get("numTargetRowsUpdated", 0))
    texts = int(counts["texts"] or 0)
    return {"rows_written": written, "texts_embedded": texts, "texts_truncated": int(counts["truncated"] or 0),
            "embed_seconds": round(seconds, 2),
            "texts_per_s": float(f"{texts / seconds:.3g}") if seconds > 0 else None, "tasks": partitions or None}
