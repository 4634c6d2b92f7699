"""Synthetic data with known truth: a seeded buy-till-you-die shop simulated per Spark partition.

* ``generator``: the simulation (numpy per partition, one Spark task each) and its raw tables;
* ``job``: ``ulv-spark generate`` -- raw inputs in the shop's own column names (Parquet) for
  ``ingest`` to read through its mapping, and the truth tables ``truth_users`` / ``truth_uplift``.
"""
