"""One session-scoped Spark (local[2], Delta on) for the whole test run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Nothing may download from a hub, in tests least of all.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="session")
def spark(spark_root):
    from ulv_spark.config import LakehouseConf, SparkConf
    from ulv_spark.spark import get_spark

    session = get_spark(
        SparkConf(master="local[2]", app_name="ulv_spark_tests", shuffle_partitions=2, driver_memory="2g",
                  extra={"spark.sql.adaptive.coalescePartitions.enabled": "true",
                         "spark.databricks.delta.snapshotPartitions": "1"}),
        # In-memory catalog: every job registers its tables itself (lake.attach), and each Derby
        # round-trip of the Hive metastore costs ~2x per Delta write. The Hive catalog is tested where
        # it matters, in processes of its own: test_catalog_persistence, the sql-server and the cluster.
        LakehouseConf(root=str(spark_root / "lakehouse"), schema="ulv_test", metastore="memory"))
    yield session
    session.stop()


@pytest.fixture
def lakehouse(tmp_path):
    """A LakehouseConf rooted in this test's tmp dir, with its own schema name."""
    from ulv_spark.config import LakehouseConf

    schema = "t_" + tmp_path.name.replace("-", "_").lower()[:40]
    return LakehouseConf(root=str(tmp_path / "lakehouse"), schema=schema,
                         shared_dir=str(tmp_path / "lakehouse" / "_shared"))


@pytest.fixture
def write_conf(tmp_path):
    """Write a YAML conf into tmp_path and return its path."""
    def _write(text: str, name: str = "conf.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return _write
