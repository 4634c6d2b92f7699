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


METASTORE_DIR = "_metastore"


def metastore_path(lake_cfg: LakehouseConf) -> Path:
    """The embedded Derby database of the persistent local catalog: ``<lakehouse.root>/_metastore/metastore_db``."""
    return Path(lake_cfg.root).resolve() / METASTORE_DIR / "metastore_db"


def metastore_in_use(db: Path) -> bool:
    """True when another process has booted the Derby database ``db`` (it holds the lock on ``dbex.lck``).

    Embedded Derby lets one JVM at a time open a database; it takes a POSIX lock on ``dbex.lck``
    (Java's FileChannel.tryLock), which a test-lock from here sees without disturbing it.
    """
    import fcntl

    lock = db / "dbex.lck"
    if not lock.is_file():
        return False
    with open(lock, "a+b") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(handle, fcntl.LOCK_UN)
    return False


def metastore_settings(lake_cfg: LakehouseConf, *, jvm_running: bool = False) -> dict[str, str]:
    """Spark settings for ``lakehouse.metastore``: a Hive metastore on Derby under the root, or in-memory.

    When another process (a running ``sql-server``, a second job on the same lakehouse) holds
    the Derby database, this session falls back to the in-memory catalog with a warning; every
    job registers its tables again (``lake.attach``), so it still runs. A JVM already running in
    this Python process (a session stopped and built again) keeps whatever it booted.
    """
    if lake_cfg.metastore != "hive":
        return {"spark.sql.catalogImplementation": "in-memory"}
    db = metastore_path(lake_cfg)
    if not jvm_running and metastore_in_use(db):
        from ulv_spark.runtime import get_logger

        get_logger("ulv_spark.spark").warning(
            "metastore %s is in use by another process (one JVM at a time): this session uses an in-memory "
            "catalog and registers the tables itself", db)
        return {"spark.sql.catalogImplementation": "in-memory"}
    db.parent.mkdir(parents=True, exist_ok=True)
    return {"spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={db};create=true",
            "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
            "spark.hadoop.hive.metastore.schema.verification": "false"}


def get_spark(spark_cfg: SparkConf, lake_cfg: Optional[LakehouseConf] = None):
    """The SparkSession to use.

    On Databricks, or when a session is already active (a notebook, a test fixture, a cluster
    driver), that session is returned and nothing is added. Under ``spark-submit`` the JVM is
    already running, so the Delta jars must come from ``--packages`` (see README) and only the
    SQL extension and catalog are set here. Otherwise a session is built for ``spark.master``
    with the Delta extension and catalog, executors on this very Python, a warehouse under the
    lakehouse root, small shuffle partitions, UTC and quiet logs.
    """
    from pyspark import SparkContext
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
    if lake_cfg is not None and lake_cfg.root and "://" not in lake_cfg.root:
        settings["spark.sql.warehouse.dir"] = str(Path(lake_cfg.root) / "_warehouse")
        settings["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={Path(lake_cfg.root) / '_derby'}"
        settings.update(metastore_settings(lake_cfg, jvm_running=SparkContext._gateway is not None))
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
