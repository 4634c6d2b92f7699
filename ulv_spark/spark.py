"""get_spark(): reuse a cluster's session, or build a local Spark with Delta Lake."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from ulv_spark.config import LakehouseConf, SparkConf

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def get_spark(spark_cfg: SparkConf, lake_cfg: Optional[LakehouseConf] = None):
    """The SparkSession to use.

    On Databricks, or when a session is already active (a notebook, a test fixture, a cluster
    driver), that session is returned and nothing is added. Under ``spark-submit`` the JVM is
    already running, so the Delta jars must come from ``--packages`` (see README) and only the
    SQL extension and catalog are set here. Otherwise a session is built for ``spark.master``
    with the Delta extension and catalog, executors on this very Python, a warehouse under the
    lakehouse root, small shuffle partitions, UTC and quiet logs.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None or on_databricks():
        return active if active is not None else SparkSession.builder.getOrCreate()

    # Executors must run the driver's Python, or torch/petastorm imports fail on them.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit: its --master wins
    builder = SparkSession.builder.appName(spark_cfg.app_name)
    if spark_cfg.master and not submitted:
        builder = builder.master(spark_cfg.master)
    settings = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.shuffle.partitions": str(spark_cfg.shuffle_partitions),
        "spark.default.parallelism": str(spark_cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": spark_cfg.driver_memory,
        "spark.ui.enabled": str(spark_cfg.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        "spark.dynamicAllocation.enabled": "false",  # barrier mode (TorchDistributor) needs this
    }
    if lake_cfg is not None and lake_cfg.root:
        settings["spark.sql.warehouse.dir"] = str(Path(lake_cfg.root) / "_warehouse")
        settings["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={Path(lake_cfg.root) / '_derby'}"
    settings.update(spark_cfg.extra)
    for key, value in settings.items():
        builder = builder.config(key, value)

    if not submitted:
        # In-process JVM: let delta-spark add its jar (resolved from ~/.m2 after `make setup`).
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    return spark
