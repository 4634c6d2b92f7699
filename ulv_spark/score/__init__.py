"""Nightly scoring: pandas-UDF inference into user_value, user_churn, promo_uplift, user_segments.

predict.py: pandas batch -> pandas batch; udf.py: the mapInPandas wrapper; tables.py: the four gold
tables; job.py: `ulv-spark score` (stage_predictions + publish).
"""
