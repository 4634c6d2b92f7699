"""Text features before the as-of date D: what the user bought (or viewed), and what they wrote.

* Product-text profile: the spend-weighted mean of the text embeddings of the products the user
  bought before D (bronze ``order_lines``: net spend per product, products with net spend > 0),
  or, for a user without such a purchase, the view-weighted mean over the products they viewed
  (``events.product_id``). Embeddings enter projected onto ``features.text_dims`` components
  fitted on the product embeddings (a product-level fit, stored in the ``text_projection`` table
  by the features job, so scoring uses the training projection): the leading principal components
  and, last, ``features.text_supervised`` directions that predict what a product's buyers did next
  (purchase_outcomes: bought again, spend), so a few dimensions keep what matters for value and
  churn, not only the most variance. The projection is linear, so the mean of projected vectors is
  the projection of the mean vector.
* Reviews written before D: count, mean rating, and a sentiment score per review — cosine
  similarity of its embedding to the conf-named positive concept minus that to the negative one —
  averaged over the reviews with text.

Pure DataFrame -> DataFrame functions over histories keyed by as_of_date (inputs.history); no
Python UDFs, nothing collected. The product catalogue and its embeddings are a snapshot (like
user attributes): a product's current text describes its past purchases too.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.features.declare import PRODUCT_TEXT, REVIEW_TEXT, Feature, block
from ulv_spark.features.inputs import exact_sum
from ulv_spark.schemas import AS_OF_DATE, USER_ID

PRODUCT_ID = "product_id"
SENTIMENT = "sentiment"
ORDER_TEXT_VECTOR = "text_vector"   # order_text_vectors: the order's projected product-text vector
KEYS = (USER_ID, AS_OF_DATE)

PRODUCT_PROFILE = block(
    Feature("has_product_text", "1 when the user bought (order_lines) or viewed (events) a product with an embedded "
                                "text before as_of_date, else 0"),
    source=PRODUCT_TEXT,
)
PRODUCT_DIMS = block(
    # at most 256 characters (the Hive metastore's column-comment limit; see tests/unit/test_catalog.py)
    Feature("text_dim_{i}", "Component {i} of the user's product-text profile: spend-weighted mean embedding of "
                            "bought products (view-weighted if only viewed) on text_projection component {i} (the "
                            "last features.text_supervised predict what buyers did next); 0 without"),
    source=PRODUCT_TEXT, per="text_dim",
)
REVIEWS = block(
    Feature("review_count", "Reviews the user wrote before as_of_date"),
    Feature("review_mean_rating", "Mean rating of the user's reviews with a rating before as_of_date; 0 when none"),
    Feature("review_sentiment", "Mean over the user's reviews with text before as_of_date of the cosine similarity "
                                "to features.text_positive_concept minus that to features.text_negative_concept; "
                                "0 when none"),
    source=REVIEW_TEXT,
)


@dataclass(frozen=True)
class TextInputs:
    """The text inputs of the feature builders, prepared by the features job (see features.job).

    Attributes:
        order_lines: bronze order_lines (user_id, product_id, order_ts, amount; order_id for the per-event
            text of the sequences), or None.
        product_vectors: project_products output (product_id, text_dim_0..k-1; products with text), or None.
        reviews: review_scores output (user_id, review_ts, rating, sentiment), or None.
    """

    order_lines: Optional[DataFrame] = None
    product_vectors: Optional[DataFrame] = None
    reviews: Optional[DataFrame] = None


def dim_names(dims: int) -> list[str]:
    """The profile columns text_dim_0 .. text_dim_{dims-1}."""
    return list(PRODUCT_DIMS.names(i)[0] for i in range(dims))


def _dot(array_col: str, weights: Sequence[float]) -> Column:
    """Dot product of an ARRAY<FLOAT|DOUBLE> column with constant `weights` (Spark SQL higher-order functions)."""
    constant = F.array(*[F.lit(float(w)) for w in weights])
    products = F.zip_with(F.col(array_col), constant, lambda a, b: a.cast("double") * b)
    return F.aggregate(products, F.lit(0.0), lambda acc, x: acc + F.coalesce(x, F.lit(0.0)))


def project_products(product_embeddings: DataFrame, components: Sequence[Sequence[float]]) -> DataFrame:
    """Product embeddings projected on `components` (one weight list per profile dimension).

    Grain: one row per product with text (has_text). Columns: product_id, text_dim_0 ..
    text_dim_{k-1} (k = len(components)).
    """
    with_text = product_embeddings.filter(F.col("has_text"))
    return with_text.select(PRODUCT_ID, *[_dot("embedding", c).alias(name)
                                          for name, c in zip(dim_names(len(components)), components)])


OUTCOMES = ("retained", "next_spend")  # purchase_outcomes' per-product targets, in component order


def purchase_outcomes(orders: DataFrame, order_lines: DataFrame, *, before: dt.date, horizon_days: int,
                      prior_weight: float = 5.0) -> DataFrame:
    """What the buyers of each product did in the `horizon_days` after buying it, seen strictly before `before`.

    A purchase line (order_lines, amount > 0, with a product id) of an order at time t counts when
    its whole outcome window (t, t + H] ends before `before`, so nothing on or after that date is
    read. Its outcomes: ``retained`` = 1 when the user placed another purchase order (amount > 0,
    not a return) in the window, and ``next_spend`` = log(1 + the user's net order spend in the
    window, floored at 0). Per product, each is the mean over its lines shrunk towards the mean of
    all lines by `prior_weight` pseudo-lines (products bought a few times get the prior mostly).

    Grain: one row per product with such a line. Columns: product_id, lines (DOUBLE), retained,
    next_spend. Sort-based (a range window per user), no self-join: the cost follows the orders.
    """
    horizon = int(horizon_days) * 86400
    cutoff = F.unix_timestamp(F.lit(dt.datetime.combine(before, dt.time())).cast("timestamp"))
    seconds = F.unix_timestamp(F.col("order_ts"))
    buy = ((F.col("amount") > 0) & ~F.col("is_return")).cast("int")
    past = orders.select(USER_ID, "order_id", seconds.alias("_t"), F.col("amount").cast("double").alias("_a"),
                         buy.alias("_buy")).filter(F.col("_t") < cutoff)
    window = Window.partitionBy(USER_ID).orderBy("_t").rangeBetween(1, horizon)
    outcome = (past.select(USER_ID, "order_id", "_t",
                           F.coalesce(F.max("_buy").over(window), F.lit(0)).cast("double").alias("retained"),
                           F.log1p(F.greatest(F.coalesce(F.sum("_a").over(window), F.lit(0.0)), F.lit(0.0)))
                           .alias("next_spend"))
               .filter(F.col("_t") + F.lit(horizon) < cutoff).drop("_t"))
    lines = (order_lines.filter(F.col(PRODUCT_ID).isNotNull() & (F.col("amount") > 0))
             .select(USER_ID, "order_id", PRODUCT_ID).join(outcome, on=[USER_ID, "order_id"], how="inner"))
    prior = lines.agg(*[F.avg(c).alias(f"_p_{c}") for c in OUTCOMES])
    per_product = lines.groupBy(PRODUCT_ID).agg(F.count(F.lit(1)).cast("double").alias("lines"),
                                                *[F.sum(c).alias(f"_s_{c}") for c in OUTCOMES])
    k = F.lit(float(prior_weight))
    return per_product.crossJoin(F.broadcast(prior)).select(
        PRODUCT_ID, "lines",
        *[((F.col(f"_s_{c}") + k * F.col(f"_p_{c}")) / (F.col("lines") + k)).alias(c) for c in OUTCOMES])


def review_scores(review_embeddings: DataFrame, *, positive: Sequence[float], negative: Sequence[float]) -> DataFrame:
    """Reviews with their sentiment score: cos(embedding, positive) - cos(embedding, negative).

    The embeddings and the concept vectors are L2-normalised, so a dot product is the cosine.
    Grain: one row per review. Columns: user_id, review_ts, rating, sentiment (null without text).
    """
    score = _dot("embedding", positive) - _dot("embedding", negative)
    return review_embeddings.select(USER_ID, "review_ts", F.col("rating").cast("double").alias("rating"),
                                    F.when(F.col("has_text"), score).alias(SENTIMENT))


def product_profile(line_history: Optional[DataFrame], view_history: Optional[DataFrame],
                    product_vectors: DataFrame, *, dims: int) -> DataFrame:
    """The product-text profile per (user_id, as_of_date) from keyed histories.

    Grain: one row per (user_id, as_of_date) with a bought (net spend > 0) or viewed product
    that has a vector. Columns: user_id, as_of_date, has_product_text (1.0), text_dim_0 ..
    text_dim_{dims-1}: the spend-weighted mean over bought products, else the view-weighted
    mean over viewed products.

    Args:
        line_history: order lines keyed by as_of_date (user_id, product_id, amount), or None.
        view_history: view events keyed by as_of_date (user_id, product_id), or None.
        product_vectors: project_products output.
        dims: profile dimensions (the columns of product_vectors).
    """
    names = dim_names(dims)
    weighted = []
    if line_history is not None:
        spend = (line_history.filter(F.col(PRODUCT_ID).isNotNull())
                 .groupBy(*KEYS, PRODUCT_ID).agg(exact_sum(F.col("amount")).alias("_w"))
                 .filter(F.col("_w") > 0))
        weighted.append(spend.select(*KEYS, PRODUCT_ID, "_w", F.lit(1).alias("_bought")))
    if view_history is not None:
        views = (view_history.filter(F.col(PRODUCT_ID).isNotNull())
                 .groupBy(*KEYS, PRODUCT_ID).agg(F.count(F.lit(1)).cast("double").alias("_w")))
        weighted.append(views.select(*KEYS, PRODUCT_ID, "_w", F.lit(0).alias("_bought")))
    if not weighted:
        raise ValueError("product_profile needs order lines or view events")
    rows = weighted[0] if len(weighted) == 1 else weighted[0].unionByName(weighted[1])
    with_vectors = rows.join(product_vectors, on=PRODUCT_ID, how="inner")
    # the bought products when there are any, else the viewed ones
    best = with_vectors.groupBy(*KEYS).agg(F.max("_bought").alias("_use"))
    used = with_vectors.join(best, on=list(KEYS), how="inner").filter(F.col("_bought") == F.col("_use"))
    total = exact_sum(F.col("_w"))
    return used.groupBy(*KEYS).agg(
        F.lit(1.0).alias("has_product_text"),
        *[(exact_sum(F.col("_w") * F.col(n)) / total).alias(n) for n in names])


def order_text_vectors(order_lines: DataFrame, product_vectors: DataFrame, *, dims: int) -> DataFrame:
    """The text vector of each order: the |amount|-weighted mean of its lines' projected product vectors.

    Feeds the per-event text fusion of the sequences (sequences.user_sequences). A line counts
    when its product has a vector and its amount is not 0; return lines (order_id
    ``<order_id>-R``) make the vector of their return order. Orders are fixed facts, so this
    needs no as-of key: the sequences take the vector of each order they hold.

    Grain: one row per (user_id, order_id) with such a line. Columns: user_id, order_id,
    text_vector ARRAY<FLOAT> (dims: text_dim_0 .. text_dim_{dims-1} in order).
    """
    names = dim_names(dims)
    weight = F.abs(F.col("amount").cast("double"))
    lines = (order_lines.filter(F.col(PRODUCT_ID).isNotNull())
             .select(USER_ID, "order_id", PRODUCT_ID, weight.alias("_w")).filter(F.col("_w") > 0))
    total = exact_sum(F.col("_w"))
    means = (lines.join(product_vectors, on=PRODUCT_ID, how="inner").groupBy(USER_ID, "order_id")
             .agg(*[(exact_sum(F.col("_w") * F.col(n)) / total).cast("double").alias(n) for n in names]))
    return means.select(USER_ID, "order_id", F.array(*[F.col(n) for n in names]).cast("array<float>")
                        .alias(ORDER_TEXT_VECTOR))


def review_activity(review_history: DataFrame) -> DataFrame:
    """Review count, mean rating and mean sentiment per (user_id, as_of_date) from keyed review scores.

    Grain: one row per (user_id, as_of_date) with a review before the date. Columns: user_id,
    as_of_date, review_count, review_mean_rating (0 without a rating), review_sentiment (0
    without a text).
    """
    def mean(name: str) -> Column:
        n = F.count(F.col(name))
        return F.when(n > 0, exact_sum(F.col(name)) / n).otherwise(F.lit(0.0))

    return review_history.groupBy(*KEYS).agg(
        F.count(F.lit(1)).cast("double").alias("review_count"),
        mean("rating").alias("review_mean_rating"),
        mean(SENTIMENT).alias("review_sentiment"))
