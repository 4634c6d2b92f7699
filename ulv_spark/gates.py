"""Quality gates between nightly stages: pure checks with thresholds from conf (`gates.*`).

A gate returns a :class:`GateResult`; the nightly job stops before the output tables are
replaced when one fails. The Spark-side helpers aggregate to a single row (nothing user-level
reaches the driver).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class GateResult:
    name: str
    value: Optional[float]
    threshold: float
    passed: bool
    message: str

    def as_dict(self) -> dict:
        return {"gate": self.name, "value": self.value, "threshold": self.threshold,
                "passed": self.passed, "message": self.message}


def reject_share_gate(rejected: int, total: int, max_share: float) -> GateResult:
    """Rejected rows / all source rows must not exceed ``max_share``."""
    share = rejected / total if total else 0.0
    ok = share <= max_share
    return GateResult("reject_share", round(share, 6), max_share, ok,
                      f"{rejected} of {total} source rows rejected ({share:.2%}; limit {max_share:.2%})")


def user_count_change_gate(current: int, previous: Optional[int], max_change: float) -> GateResult:
    """Relative change in the number of users vs the previous night must stay within ``max_change``."""
    if not previous:
        return GateResult("user_count_change", None, max_change, current > 0,
                          f"{current} users; no previous night to compare" if current else "no users at all")
    change = (current - previous) / previous
    ok = abs(change) <= max_change
    return GateResult("user_count_change", round(change, 6), max_change, ok,
                      f"{current} users vs {previous} the previous night ({change:+.1%}; limit ±{max_change:.0%})")


def null_share_gate(null_shares: dict[str, float], max_share: float) -> GateResult:
    """The worst column's share of nulls among the features must not exceed ``max_share``."""
    if not null_shares:
        return GateResult("null_feature_share", 0.0, max_share, True, "no feature columns checked")
    worst = max(null_shares, key=null_shares.get)
    share = null_shares[worst]
    ok = share <= max_share
    return GateResult("null_feature_share", round(share, 6), max_share, ok,
                      f"worst column {worst}: {share:.2%} null (limit {max_share:.2%})")


def population_stability_index(expected: Sequence[float], actual: Sequence[float], eps: float = 1e-4) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins, from bin counts (or shares) of two distributions."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.size == 0:
        raise ValueError(f"PSI needs two count vectors of the same non-zero length, got {e.shape} and {a.shape}")
    e = np.clip(e / e.sum(), eps, None) if e.sum() > 0 else np.full_like(e, 1.0 / e.size)
    a = np.clip(a / a.sum(), eps, None) if a.sum() > 0 else np.full_like(a, 1.0 / a.size)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_gate(expected_counts: Optional[Sequence[float]], actual_counts: Sequence[float], max_psi: float,
             column: str = "expected_value") -> GateResult:
    """Score distribution shift vs the previous night (PSI over the previous night's deciles)."""
    if expected_counts is None:
        return GateResult("score_psi", None, max_psi, True, f"{column}: no previous night to compare")
    psi = population_stability_index(expected_counts, actual_counts)
    ok = psi <= max_psi and math.isfinite(psi)
    return GateResult("score_psi", round(psi, 6), max_psi, ok,
                      f"{column}: PSI {psi:.4f} vs the previous night (limit {max_psi})")


# ---- Spark-side aggregations (one row back to the driver) --------------------------------------
def null_shares(df, columns: Sequence[str]) -> dict[str, float]:
    """Share of nulls (and NaN) per column, computed in one aggregation."""
    from pyspark.sql import functions as F

    if not columns:
        return {}
    aggs = [F.avg((F.col(c).isNull() | F.isnan(F.col(c).cast("double"))).cast("double")).alias(c) for c in columns]
    row = df.agg(*aggs).first()
    return {c: float(row[c] or 0.0) for c in columns}


def decile_edges(df, column: str, rel_error: float = 1e-4) -> list[float]:
    """Cut points of ``column``'s deciles (9 edges), from Spark's approxQuantile."""
    return df.approxQuantile(column, [i / 10 for i in range(1, 10)], rel_error)


def bin_counts(df, column: str, edges: Sequence[float]) -> list[int]:
    """Counts of ``column`` in the bins (-inf, e1], (e1, e2], ..., (e9, inf), in one aggregation."""
    from pyspark.sql import functions as F

    bucket = F.lit(0)
    for edge in edges:
        bucket = bucket + (F.col(column) > F.lit(float(edge))).cast("int")
    rows = df.groupBy(bucket.alias("b")).count().collect()
    counts = [0] * (len(edges) + 1)
    for row in rows:
        counts[int(row["b"])] = int(row["count"])
    return counts
