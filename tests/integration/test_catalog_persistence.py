"""The local catalog is a persistent Hive metastore: tables and latest_* views outlive the process.

Two separate Python processes (each its own JVM) on one lakehouse: the first registers a table
and its view and, while it still runs, holds the embedded Derby database (so a third session
would fall back to an in-memory catalog); the second sees both without registering anything.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ulv_spark.config import LakehouseConf
from ulv_spark.spark import metastore_in_use, metastore_path, metastore_settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

SESSION = """
import sys
from ulv_spark import catalog, lake
from ulv_spark.config import LakehouseConf, SparkConf
from ulv_spark.spark import get_spark
lk = LakehouseConf(root=sys.argv[1], schema="persist_t")
spark = get_spark(SparkConf(master="local[1]", shuffle_partitions=1), lk)
print("catalog", spark.conf.get("spark.sql.catalogImplementation"), flush=True)
"""
WRITE = SESSION + """
ref = lake.table_ref(lk, "user_value")
lake.ensure_table(spark, ref, catalog.USER_VALUE)
lake.create_latest_view(spark, ref)
print("ready", flush=True)
sys.stdin.readline()  # hold the session (and the Derby database) until the test says so
"""
READ = SESSION + """
print(sorted((t.name, t.tableType) for t in spark.catalog.listTables("persist_t")), flush=True)
"""


def _ours(lines):
    return [line.strip() for line in lines if line.strip().startswith(("catalog ", "ready", "[("))]


def _python(code, root, **kwargs):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(root)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kwargs)


def test_tables_and_views_survive_the_process_and_a_held_metastore_is_detected(tmp_path):
    root = tmp_path / "lakehouse"
    lk = LakehouseConf(root=str(root), schema="persist_t")
    db = metastore_path(lk)
    assert not metastore_in_use(db)

    writer = _python(WRITE, root, stdin=subprocess.PIPE)
    try:
        lines = []
        while "ready" not in lines and len(lines) < 200:  # the JVM's Ivy lines share stdout
            line = writer.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert _ours(lines) == ["catalog hive", "ready"]
        assert metastore_in_use(db)  # Derby's lock on dbex.lck, seen from another process
        assert metastore_settings(lk) == {"spark.sql.catalogImplementation": "in-memory"}
    finally:
        writer.communicate("\n", timeout=300)
    assert writer.returncode == 0
    assert not metastore_in_use(db)
    assert metastore_settings(lk)["spark.sql.catalogImplementation"] == "hive"

    reader = _python(READ, root)
    out, _ = reader.communicate(timeout=300)
    assert reader.returncode == 0
    assert _ours(out.splitlines()) == ["catalog hive", "[('latest_user_value', 'VIEW'), ('user_value', 'EXTERNAL')]"]
