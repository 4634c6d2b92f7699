"""`ulv-spark features --as-of D`: write user_features, training_examples and token_vocabulary for D.

Reads the bronze tables (orders required; events, campaign_exposures and user_attributes when
they exist) and the text tables (order_lines, product_embeddings projected through the stored
text_projection, review_embeddings scored against the sentiment concepts), builds the frames
with the pure builders and replaces the as_of_date = D partition of each output table, so
re-running a date replaces that date only.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

from ulv_spark import catalog, lake
from ulv_spark.config import Config
from ulv_spark.context import JobContext, Summary
from ulv_spark.features.build import attribute_feature_columns, build_training_examples, build_user_features, origins
from ulv_spark.features.sequences import build_token_vocabulary, vocab_size, vocabulary_fingerprint
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import RUN_ID, TableContract

OUTPUT_TABLES = catalog.names(catalog.FEATURES)


def read_inputs(spark, cfg: Config) -> dict:
    """The bronze inputs as DataFrames: orders (must exist) and the optional ones (None when absent)."""
    from ulv_spark.errors import JobFailed

    orders_ref = lake.table_ref(cfg.lakehouse, catalog.ORDERS.name)
    if not lake.is_delta(spark, orders_ref):
        raise JobFailed(f"table {orders_ref.name} does not exist (at {orders_ref.path}); run `ulv-spark ingest` first")
    inputs = {}
    for name in catalog.names(catalog.BRONZE, catalog.DERIVED):
        ref = lake.table_ref(cfg.lakehouse, name)
        inputs[name] = lake.read_table(spark, ref) if lake.is_delta(spark, ref) else None
    return inputs


SUPERVISED_MIN_PRODUCTS = 50   # products with purchase outcomes needed to fit the supervised components
SUPERVISED_RIDGE = 1.0         # ridge strength per product (Spark's regParam = this / products)


def _principal_components(rows, *, k: int, dim: int) -> tuple[list[list[float]], list[float]]:
    """The k leading principal directions of the `rows` embeddings (Spark ML PCA) and their variance shares."""
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    if k <= 0:
        return [], []
    vectors = rows.select(array_to_vector(F.col("embedding").cast("array<double>")).alias("v"))
    model = PCA(k=min(k, dim), inputCol="v", outputCol="p").fit(vectors)
    matrix = model.pc.toArray()  # dim x k
    components = []
    for j in range(matrix.shape[1]):
        column = matrix[:, j]
        sign = 1.0 if column[abs(column).argmax()] >= 0 else -1.0  # a fixed sign: the largest weight positive
        components.append([float(sign * w) for w in column])
    return components, [float(v) for v in model.explainedVariance.toArray()]


def _outcome_directions(rows, outcomes, *, count: int) -> list[list[float]]:
    """Unit directions in embedding space that predict the first `count` per-product outcomes (ridge regression).

    `outcomes` is features.text.purchase_outcomes output. Spark ML's LinearRegression (normal
    equations: a distributed Gram matrix, then a dim x dim solve on the driver), weighted by the
    product's purchase lines, L2 strength SUPERVISED_RIDGE per product. A direction points
    towards more of its outcome. Empty when fewer than SUPERVISED_MIN_PRODUCTS products have outcomes.
    """
    import numpy as np
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.regression import LinearRegression
    from pyspark.sql import functions as F

    from ulv_spark.features.text import OUTCOMES, PRODUCT_ID

    data = (rows.select(PRODUCT_ID, array_to_vector(F.col("embedding").cast("array<double>")).alias("v"))
            .join(outcomes, on=PRODUCT_ID, how="inner")).cache()
    try:
        n = data.count()
        if n < SUPERVISED_MIN_PRODUCTS:
            return []
        directions = []
        for target in OUTCOMES[:count]:
            fit = LinearRegression(featuresCol="v", labelCol=target, weightCol="lines", solver="normal",
                                   regParam=SUPERVISED_RIDGE / n, elasticNetParam=0.0, standardization=False,
                                   fitIntercept=True).fit(data)
            w = np.asarray(fit.coefficients.toArray(), dtype=float)
            norm = float(np.linalg.norm(w))
            if not np.isfinite(norm) or norm == 0.0:
                return []
            directions.append([float(x) for x in w / norm])
        return directions
    finally:
        data.unpersist()


def fit_projection(product_embeddings, *, model_id: str, dims: int, outcomes=None,
                   supervised: int = 0) -> tuple[list[list[float]], list[Optional[float]], int]:
    """The `dims` components of the product-text profile (products with text of encoder `model_id`).

    The last `supervised` components are directions that predict what a product's buyers did
    next (`outcomes`: features.text.purchase_outcomes; see _outcome_directions), the others the
    leading principal components (Spark ML PCA: a distributed covariance, then an
    eigendecomposition of the dim x dim matrix on the driver). Without enough products with
    outcomes every component is a principal one. Returns (components, variance shares with None
    for a supervised component, products fitted); empty lists when no product has text.
    """
    from pyspark.sql import functions as F

    rows = product_embeddings.filter(F.col("has_text") & (F.col("model_id") == F.lit(model_id)))
    n = rows.count()
    if n == 0:
        return [], [], 0
    dim = len(rows.select("embedding").first()[0])
    directions = _outcome_directions(rows, outcomes, count=supervised) if supervised and outcomes is not None else []
    components, variance = _principal_components(rows, k=dims - len(directions), dim=dim)
    return components + directions, variance + [None] * len(directions), int(n)


def load_projection(spark, cfg: Config, inputs: dict, *, run_id: str, history_before: dt.date, store: bool = True,
                    log=None) -> tuple[Optional[str], list[list[float]], str, int]:
    """The projection of the current product embeddings: the stored one, else fitted (and stored when `store`).

    The supervised components (features.text_supervised) are fitted on purchase outcomes seen
    strictly before `history_before`. The nightly features job stores the projection it fits
    (history before its as-of date) and reuses it ever after; the backtest passes store=False and
    its earliest test origin, so its projection never reads a test window. Returns (model_id,
    components, how, supervised) with how = "stored" / "fitted" / "no product texts" and
    supervised the number of supervised components (the last ones); components is empty without
    product embeddings with text.
    """
    import datetime as _dt

    from pyspark.sql import functions as F

    from ulv_spark.features.text import purchase_outcomes

    feats = cfg.features
    dims = feats.text_dims
    emb_ref = lake.table_ref(cfg.lakehouse, catalog.PRODUCT_EMBEDDINGS.name)
    if not lake.is_delta(spark, emb_ref):
        return None, [], "no product_embeddings table", 0
    embeddings = lake.read_table(spark, emb_ref)
    latest = embeddings.orderBy(F.col("embedded_at").desc(), F.col("model_id")).select("model_id").first()
    if latest is None:
        return None, [], "no product texts", 0
    model_id = latest[0]
    ref = lake.table_ref(cfg.lakehouse, catalog.TEXT_PROJECTION.name)
    if store and lake.is_delta(spark, ref):
        stored = (lake.read_table(spark, ref).filter(F.col("model_id") == F.lit(model_id))
                  .orderBy("component").select("weights", "explained_variance").collect())  # one row per component
        if len(stored) >= dims:
            kept = sum(r[1] is None for r in stored[:dims])
            if log and kept != min(feats.text_supervised, dims):
                log.warning("text projection: the stored one has %d supervised components, features.text_supervised "
                            "asks for %d; it is kept (a model is scored with the projection it was trained with) - "
                            "delete its rows in %s to refit", kept, feats.text_supervised, ref.name)
            return model_id, [list(r[0]) for r in stored[:dims]], "stored", kept
    outcomes = None
    lines = inputs.get(catalog.ORDER_LINES.name)
    if feats.text_supervised and lines is not None and inputs.get(catalog.ORDERS.name) is not None:
        outcomes = purchase_outcomes(inputs[catalog.ORDERS.name], lines, before=history_before,
                                     horizon_days=cfg.run.horizon_days)
    components, variance, n = fit_projection(embeddings, model_id=model_id, dims=dims, outcomes=outcomes,
                                             supervised=min(feats.text_supervised, dims))
    if not components:
        return model_id, [], "no product texts", 0
    fitted = sum(v is None for v in variance)
    if log:
        log.info("text projection: %d principal + %d supervised components (purchase outcomes before %s) fitted on "
                 "%d products (%s)", len(components) - fitted, fitted, history_before, n, model_id)
        if fitted < min(feats.text_supervised, dims):
            log.warning("text projection: too few products with purchase outcomes before %s (order_lines with "
                        "product ids, need %d products) for the supervised components; principal ones instead",
                        history_before, SUPERVISED_MIN_PRODUCTS)
    if not store:
        return model_id, components, "fitted", fitted
    fitted_at = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = [(model_id, i, len(c), c, variance[i] if i < len(variance) else None, n, fitted_at, run_id)
            for i, c in enumerate(components)]
    df = spark.createDataFrame(rows, catalog.TEXT_PROJECTION.ddl().replace(" NOT NULL", ""))
    lake.merge(spark, df, ref, catalog.TEXT_PROJECTION)
    return model_id, components, "fitted", fitted


def concept_vectors(cfg: Config) -> tuple[str, list[float], list[float]]:
    """(model_id, positive, negative): the conf-named sentiment concepts embedded by the night's encoder.

    The night's encoder: embed.encoder_dir, or its fine-tuned copy when embed.finetune_layers is set and fitted.
    """
    from ulv_spark.text.encoder import get_encoder
    from ulv_spark.text.job import current_encoder_dir

    encoder = get_encoder(current_encoder_dir(cfg), max_length=cfg.embed.max_length)
    vectors = encoder.encode([cfg.features.text_positive_concept, cfg.features.text_negative_concept]).vectors
    return encoder.model_id, [float(x) for x in vectors[0]], [float(x) for x in vectors[1]]


def read_text_inputs(spark, cfg: Config, inputs: dict, *, run_id: str, history_before: dt.date,
                     store: bool = True, log=None):
    """The text inputs of the builders (features.text.TextInputs) and what was found, or (None, facts).

    None when features.text is off or no text table exists (the text features are then their
    defaults). Only rows of the current encoder's embeddings are used. `history_before` and
    `store`: see load_projection.
    """
    from pyspark.sql import functions as F

    from ulv_spark.features.text import TextInputs, project_products, review_scores

    if not cfg.features.text:
        return None, {"text": "off (features.text: false)"}
    facts = {}
    model_id, components, how, supervised = load_projection(spark, cfg, inputs, run_id=run_id,
                                                            history_before=history_before, store=store, log=log)
    facts["projection"] = how
    if components:
        facts["projection_components"] = {"principal": len(components) - supervised, "supervised": supervised}
    vectors = None
    if components:
        embeddings = lake.read_table(spark, lake.table_ref(cfg.lakehouse, catalog.PRODUCT_EMBEDDINGS.name))
        vectors = project_products(embeddings.filter(F.col("model_id") == F.lit(model_id)), components)
        facts["product_text_model"] = model_id
    reviews = None
    review_ref = lake.table_ref(cfg.lakehouse, catalog.REVIEW_EMBEDDINGS.name)
    if lake.is_delta(spark, review_ref):
        from ulv_spark.errors import JobFailed
        from ulv_spark.text.encoder import EncoderNotFound

        try:
            review_model, positive, negative = concept_vectors(cfg)
        except EncoderNotFound as exc:
            raise JobFailed(str(exc)) from None
        stored = lake.read_table(spark, review_ref).filter(F.col("model_id") == F.lit(review_model))
        reviews = review_scores(stored, positive=positive, negative=negative)
        facts["review_text_model"] = review_model
    facts["order_lines"] = inputs.get(catalog.ORDER_LINES.name) is not None
    if vectors is None and reviews is None:
        return None, {**facts, "text": "no text tables: text features are their defaults"}
    return TextInputs(order_lines=inputs.get(catalog.ORDER_LINES.name), product_vectors=vectors,
                      reviews=reviews), facts


def _check_columns(spark, ref: lake.TableRef, contract: TableContract) -> None:
    """Fail before writing when the existing table's columns differ from this run's contract."""
    from ulv_spark.errors import JobFailed

    if not lake.is_delta(spark, ref):
        return
    existing = lake.read_table(spark, ref).columns
    if existing != contract.column_names:
        added = [c for c in contract.column_names if c not in existing]
        dropped = [c for c in existing if c not in contract.column_names]
        raise JobFailed(f"{ref.name}: this run's columns differ from the table's (new: {added}, missing: {dropped}); "
                        "features conf or user_attributes columns changed - write to a new lakehouse schema or "
                        "drop the table to rebuild it")


def write_feature_tables(spark, cfg: Config, *, as_of: dt.date, run_id: str, inputs: Optional[dict] = None) -> dict:
    """Build and write the three feature tables for `as_of`; returns the run's summary facts."""
    from pyspark.sql import functions as F

    log = get_logger("ulv_spark.features")
    inputs = inputs if inputs is not None else read_inputs(spark, cfg)
    feats = cfg.features
    frames = (inputs["orders"], inputs["events"], inputs["campaign_exposures"], inputs["user_attributes"])
    attr_cols = attribute_feature_columns(inputs["user_attributes"], feats)
    contracts = {name: catalog.contract(name, feats, attr_cols) for name in OUTPUT_TABLES}
    refs = {name: lake.table_ref(cfg.lakehouse, name) for name in OUTPUT_TABLES}
    for name in OUTPUT_TABLES:
        _check_columns(spark, refs[name], contracts[name])

    text, text_facts = read_text_inputs(spark, cfg, inputs, run_id=run_id, history_before=as_of, log=log)
    behaviour_inputs = (catalog.ORDERS.name, catalog.EVENTS.name, catalog.CAMPAIGN_EXPOSURES.name,
                        catalog.USER_ATTRIBUTES.name)  # the text tables are described under "text"
    summary = {"inputs": {name: inputs[name] is not None for name in behaviour_inputs}, "text": text_facts,
               "origins": [d.isoformat() for d in origins(as_of, horizon_days=cfg.run.horizon_days,
                                                          features_cfg=feats)],
               "vocab_size": vocab_size(feats), "vocabulary_fingerprint": vocabulary_fingerprint(feats),
               "rows": {}, "seconds": {}}
    builds = {
        catalog.USER_FEATURES.name: lambda: build_user_features(*frames, as_of=as_of, features_cfg=feats, text=text),
        catalog.TRAINING_EXAMPLES.name: lambda: build_training_examples(
            *frames, as_of=as_of, horizon_days=cfg.run.horizon_days, features_cfg=feats, text=text),
        catalog.TOKEN_VOCABULARY.name: lambda: build_token_vocabulary(spark, feats, as_of=as_of),
    }
    for name in OUTPUT_TABLES:
        with stage(f"features: write {name} for {as_of}", log) as info:
            df = builds[name]().withColumn(RUN_ID, F.lit(run_id))
            lake.write_partition(spark, df, refs[name], contracts[name], as_of=as_of)
            info["rows"] = lake.read_table(spark, refs[name], as_of_date=as_of).count()
        summary["rows"][name] = info["rows"]
        summary["seconds"][name] = info["seconds"]
    for name in OUTPUT_TABLES:
        if catalog.table(name).latest_view:
            lake.create_latest_view(spark, refs[name])
    summary["tables"] = {name: refs[name].name for name in OUTPUT_TABLES}
    return summary


def run_features(ctx: JobContext) -> Summary:
    """The `features` stage: write the feature tables for ctx.as_of and report row counts."""
    summary = write_feature_tables(ctx.spark, ctx.cfg, as_of=ctx.as_of, run_id=ctx.run_id)
    if summary["rows"]["user_features"] == 0:
        get_logger("ulv_spark.features").warning("no user has an order or event before %s", ctx.as_of)
    return summary
