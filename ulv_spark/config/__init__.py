"""Typed, frozen configuration loaded once from YAML.

* ``sections``: the conf sections (frozen dataclasses, one per top-level key) and their checks;
* ``loader``: ``load_config`` (YAML + ``extends`` + ``--set`` overrides, strict typing) and ``to_dict``;
* ``paths``: relative paths made absolute, paths under ``lakehouse/`` rebased on ``lakehouse.root``.

Everything a caller needs is importable from ``ulv_spark.config``.
"""
from ulv_spark.config.loader import REMOVED_KEYS, load_config, to_dict
from ulv_spark.config.sections import (EVALUATE_METHODS, Config, ConfigError, EncoderConf, EvaluateConf, FeaturesConf,
                                       GatesConf, GenerateConf, IngestConf, LakehouseConf, NightlyConf, PlanConf,
                                       RunConf, ScoreConf, SegmentsConf, SourceConf, SourcesConf, SparkConf, SqlServerConf,
                                       TrainConf)

__all__ = ["Config", "ConfigError", "EVALUATE_METHODS", "EncoderConf", "EvaluateConf", "FeaturesConf", "GatesConf",
           "GenerateConf", "IngestConf", "LakehouseConf", "NightlyConf", "PlanConf", "REMOVED_KEYS", "RunConf",
           "ScoreConf", "SegmentsConf", "SourceConf", "SourcesConf", "SparkConf", "SqlServerConf", "TrainConf",
           "load_config", "to_dict"]
