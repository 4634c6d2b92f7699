"""Stable segment ids: match a new fit's clusters to the previous fit's segments (no Spark).

The clusters of a new fit come with arbitrary labels 0..k-1. Each is matched to one previous
segment id by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the squared
Euclidean distance between centroids, so a segment that stays where it was keeps its id. With
more new clusters than previous segments the unmatched ones get fresh ids after the largest id
ever used; with fewer, the unmatched previous ids are retired (not reused).

Centroids are compared in a space every fit shares: the standardised predicted value, churn
probability and best-arm uplift (cluster mean minus the night's mean, over the night's standard
deviation; see ``fit.score_centroids``). The embedding space itself is not shared: a retrained
model's encoder has a new one.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def match_centroids(previous: Mapping[int, Sequence[float]], new: Mapping[int, Sequence[float]],
                    *, next_id: int | None = None, max_distance: float | None = None) -> dict[int, int]:
    """New cluster label -> segment id.

    Args:
        previous: previous segment id -> centroid.
        new: new cluster label -> centroid (same length as the previous ones).
        next_id: first fresh id for unmatched new clusters (default: max previous id + 1, or 0).
        max_distance: a new cluster farther than this (Euclidean) from its partner is not matched
            and gets a fresh id (default: every cluster is matched while previous ids remain).

    Ties in distance are broken by scipy's deterministic order (lowest labels first). Unmatched
    new labels get fresh ids in increasing label order.
    """
    from scipy.optimize import linear_sum_assignment

    labels = sorted(new)
    if not previous:
        start = 0 if next_id is None else next_id
        return {label: start + i for i, label in enumerate(labels)}
    ids = sorted(previous)
    prev = np.asarray([previous[i] for i in ids], dtype=np.float64)
    cur = np.asarray([new[label] for label in labels], dtype=np.float64)
    if prev.shape[1] != cur.shape[1]:
        raise ValueError(f"centroids differ in length: previous {prev.shape[1]}, new {cur.shape[1]}")
    cost = ((cur[:, None, :] - prev[None, :, :]) ** 2).sum(axis=2)
    limit = None if max_distance is None else float(max_distance) ** 2
    # pairs beyond the limit cost more than any admissible assignment, then are dropped
    work = cost if limit is None else np.where(cost > limit, cost.sum() + limit + 1.0, cost)
    rows, cols = linear_sum_assignment(work)
    out = {labels[r]: ids[c] for r, c in zip(rows, cols) if limit is None or cost[r, c] <= limit}
    fresh = max(ids) + 1 if next_id is None else next_id
    for label in labels:
        if label not in out:
            out[label] = fresh
            fresh += 1
    return out
