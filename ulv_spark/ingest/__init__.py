"""Inputs of the lakehouse: the order log and optional inputs into bronze Delta.

* ``mapping``: the source's column names -> the input contracts; value parsers.
* ``validate``: reject reasons, quarantine rows, line-level aggregation (pure DataFrame code).
* ``presets``: known public order logs (CDNOW from the lifetimes wheel).
* ``job``: ``ulv-spark ingest``.

The synthetic shop that ``ulv-spark generate`` writes lives in ``ulv_spark.synthetic``.
"""
