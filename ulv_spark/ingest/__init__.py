"""Inputs of the lakehouse: the order log and optional inputs into bronze Delta, and synthetic data.

* ``mapping``: the source's column names -> the input contracts; value parsers.
* ``validate``: reject reasons, quarantine rows, line-level aggregation (pure DataFrame code).
* ``presets``: known public order logs (CDNOW from the lifetimes wheel).
* ``job``: ``ulv-spark ingest``.
* ``generator`` / ``generate_job``: the seeded buy-till-you-die simulator with ground truth,
  ``ulv-spark generate``.
"""
