"""Pure DataFrame functions: the clustering inputs of one night from the staged predictions.

Input: `score_predictions` rows of one as_of_date (user_id, embedding, expected_value,
churn_probability, arm_value with the control first). Nothing here reads, writes or collects.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.names import ARM_VALUE, CHURN_PROBABILITY, EXPECTED_VALUE
from ulv_spark.schemas import USER_ID
from ulv_spark.segments.contracts import BEST_UPLIFT, EMBEDDING

EMBEDDING_VECTOR = "_embedding_vec"
SCORE_COLUMNS = (EXPECTED_VALUE, CHURN_PROBABILITY, BEST_UPLIFT)  # standardised beside the embedding


def best_uplift(arm_value) -> "F.Column":
    """Largest arm_value[i] - arm_value[0] over the non-control arms i >= 1; 0 without such arms."""
    deltas = F.transform(arm_value, lambda x, i: F.when(i > 0, x - F.element_at(arm_value, 1)))
    return F.coalesce(F.array_max(F.filter(deltas, lambda d: d.isNotNull())), F.lit(0.0))


def segment_inputs(predictions: DataFrame) -> DataFrame:
    """One row per user: user_id, embedding (as an ML vector in `_embedding_vec`) and the three scores.

    Columns: user_id, _embedding_vec (DenseVector), expected_value, churn_probability,
    best_uplift_value (all DOUBLE).
    """
    from pyspark.ml.functions import array_to_vector

    return predictions.select(
        USER_ID, array_to_vector(F.col(EMBEDDING)).alias(EMBEDDING_VECTOR),
        F.col(EXPECTED_VALUE).cast("double").alias(EXPECTED_VALUE),
        F.col(CHURN_PROBABILITY).cast("double").alias(CHURN_PROBABILITY),
        best_uplift(F.col(ARM_VALUE)).cast("double").alias(BEST_UPLIFT))
