"""Nightly scoring: predict.py (pandas batch -> pandas batch), udf.py (mapInPandas wrapper), tables.py (the four gold tables), job.py (`ulv-spark score`)."""
