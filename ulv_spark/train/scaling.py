"""The tabular feature transform, once: numpy (scoring, rank side) and Spark column (the feed), side by side.

Raw feature x -> sign(x) * log1p(|x|) -> (t - mean) / std -> NaN/null to 0 -> clipped to
[-FEATURE_CLIP, FEATURE_CLIP]. ``mean`` / ``std`` are statistics of the transformed values on
the training split (``feed.training_statistics``), saved in meta.json. Torch-free; pyspark is
imported only by the Spark half.
"""
from __future__ import annotations

import numpy as np

FEATURE_TRANSFORM = "signed_log1p"  # applied before standardising (spend and counts are heavy-tailed)
# Standardised tabular inputs are clipped here: a value far outside the training range says
# "extreme" just as well at 10 sigma, and unbounded inputs make the MLP extrapolate wildly.
FEATURE_CLIP = 10.0


def standardise(tabular: np.ndarray, mean, std) -> np.ndarray:
    """Raw tabular features -> model inputs: signed log1p, standardise, NaN -> 0, clip.

    Mirrors :func:`standardised_features_column` (the Spark side) exactly.
    """
    x = np.asarray(tabular, dtype=np.float64)
    x = np.sign(x) * np.log1p(np.abs(x))
    z = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    z = np.where(np.isnan(z), 0.0, z)
    return np.clip(z, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)


def signed_log1p_column(column):
    """sign(x) * log1p(|x|) of a Spark column as DOUBLE; NaN becomes null (it would poison avg/stddev)."""
    from pyspark.sql import functions as F

    x = column.cast("double")
    clean = F.when(F.isnan(x), F.lit(None)).otherwise(x)
    return F.signum(clean) * F.log1p(F.abs(clean))


def standardised_features_column(feature_columns: list[str], mean: list[float], std: list[float]):
    """ARRAY<FLOAT> of standardised features; mirrors :func:`standardise` (the numpy side)."""
    from pyspark.sql import functions as F

    parts = []
    for name, m, s in zip(feature_columns, mean, std):
        z = (signed_log1p_column(F.col(name)) - F.lit(float(m))) / F.lit(float(s))
        clipped = F.greatest(F.lit(-FEATURE_CLIP), F.least(F.lit(FEATURE_CLIP), F.coalesce(z, F.lit(0.0))))
        parts.append(clipped.cast("float"))
    return F.array(*parts)
