"""Spark's Thrift JDBC/ODBC server (HiveThriftServer2) over the lakehouse, started and stopped by pid.

`start` launches ``python -m ulv_spark.serving.thrift <conf.yaml>`` as a detached process: it
builds a Spark session on the lakehouse, registers every existing table and the ``latest_*``
views (`lake.attach`), starts HiveThriftServer2 inside that session's JVM
(``HiveThriftServer2.startWithContext``: the server sees exactly the session's catalog) on
``sql_server.host:port`` and registers tables created later every ``sql_server.refresh_seconds``.
The pid file ``<lakehouse.shared_dir>/sql-server.json`` names the process, host and port; `stop`
sends it SIGTERM (SIGKILL after a grace period) and removes the file. Any Hive JDBC client
connects to ``jdbc:hive2://<host>:<port>/<lakehouse.schema>`` (beeline ships in the pyspark wheel).

The server process holds the lakehouse's Derby metastore while it runs; jobs started meanwhile
use an in-memory catalog (see `spark.metastore_settings`) and the server still sees their
tables: it registers them by path, and views read the newest rows at query time.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

PID_FILE = "sql-server.json"
LOG_FILE = "sql-server.log"
CONF_FILE = "sql-server.conf.yaml"
THRIFT_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


def jdbc_url(host: str, port: int, schema: str) -> str:
    return f"jdbc:hive2://{host}:{port}/{schema}"


def _state_dir(cfg) -> Path:
    return Path(cfg.lakehouse.shared_dir)


def read_pid_file(cfg) -> Optional[dict]:
    path = _state_dir(cfg) / PID_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process has exited
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def status(cfg) -> dict:
    """{"status": running | starting | stopped, pid, host, port, jdbc_url, log}."""
    info = read_pid_file(cfg)
    if not info or not _alive(int(info["pid"])):
        return {"status": "stopped"}
    state = "running" if port_open(info["host"], int(info["port"])) else "starting"
    return {"status": state, **info}


def start(cfg, *, config_dict: dict) -> dict:
    """Launch the server process and wait until its port answers; returns `status`.

    Raises:
        RuntimeError: a server of this lakehouse is already running, the port is taken, or the
            process died / did not answer within sql_server.start_timeout_seconds (the log is named).
    """
    import yaml

    conf = cfg.sql_server
    current = status(cfg)
    if current["status"] != "stopped":
        raise RuntimeError(f"a sql-server is already {current['status']} for this lakehouse "
                           f"(pid {current['pid']}, {current['jdbc_url']}): `ulv-spark sql-server stop` first")
    if port_open(conf.host, conf.port):
        raise RuntimeError(f"port {conf.host}:{conf.port} is already in use: set sql_server.port")
    state = _state_dir(cfg)
    state.mkdir(parents=True, exist_ok=True)
    conf_path, log_path = state / CONF_FILE, state / LOG_FILE
    conf_path.write_text(yaml.safe_dump({k: v for k, v in config_dict.items() if k != "source_file"}),
                         encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    env.pop("PYSPARK_GATEWAY_PORT", None)  # never attach to the caller's JVM
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ulv_spark.serving.thrift", str(conf_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    info = {"pid": proc.pid, "host": conf.host, "port": conf.port,
            "jdbc_url": jdbc_url(conf.host, conf.port, cfg.lakehouse.schema), "log": str(log_path)}
    (state / PID_FILE).write_text(json.dumps(info), encoding="utf-8")
    deadline = time.monotonic() + conf.start_timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (state / PID_FILE).unlink(missing_ok=True)
            raise RuntimeError(f"the sql-server process exited with code {proc.returncode}; see {log_path}")
        if port_open(conf.host, conf.port):
            return {"status": "running", **info}
        time.sleep(1.0)
    stop(cfg)
    raise RuntimeError(f"the sql-server did not answer on {conf.host}:{conf.port} within "
                       f"{conf.start_timeout_seconds}s (sql_server.start_timeout_seconds); see {log_path}")


def stop(cfg, grace_seconds: float = 60.0) -> dict:
    """SIGTERM the server named by the pid file (SIGKILL after ``grace_seconds``); remove the file."""
    info = read_pid_file(cfg)
    path = _state_dir(cfg) / PID_FILE
    if not info:
        return {"status": "stopped", "was": "not running"}
    pid = int(info["pid"])
    was = "running" if _alive(pid) else "not running (stale pid file)"
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)  # the server leads its own session: its JVM goes with it
    path.unlink(missing_ok=True)
    return {"status": "stopped", "was": was, "pid": pid}


# ---- the server process ---------------------------------------------------------------------
def _register_all(spark, cfg) -> list[str]:
    from ulv_spark import catalog, lake

    return lake.attach(spark, cfg.lakehouse, catalog.names(), views_for=catalog.latest_views())


def serve(conf_path: str) -> int:
    """The server process: a session on the lakehouse, its tables registered, HiveThriftServer2 in its JVM."""
    from ulv_spark.config import load_config
    from ulv_spark.runtime import get_logger
    from ulv_spark.spark import get_spark

    log = get_logger("ulv_spark.sql_server")
    cfg = load_config(conf_path)
    conf = cfg.sql_server
    # the Thrift service reads these from the session's Hive conf when it starts
    extra = {**cfg.spark.extra, "spark.hive.server2.thrift.port": str(conf.port),
             "spark.hive.server2.thrift.bind.host": conf.host,
             "spark.hadoop.hive.server2.thrift.port": str(conf.port),
             "spark.hadoop.hive.server2.thrift.bind.host": conf.host,
             "spark.sql.hive.thriftServer.singleSession": "true",
             # The Thrift server runs its statements with the Java 8 date API on, and Delta 4.0's
             # metadata-only answer to max(partition date) (the latest_* views) then builds a
             # LocalDate where java.sql.Date is expected (ClassCastException): answer from the data.
             "spark.databricks.delta.optimizeMetadataQuery.enabled": "false"}
    import dataclasses

    spark = get_spark(dataclasses.replace(cfg.spark, extra=extra, app_name="ulv_spark_sql_server"), cfg.lakehouse)
    registered = _register_all(spark, cfg)
    log.info("sql-server: %d tables and views registered", len(registered))
    jvm = spark.sparkContext._jvm
    getattr(jvm, THRIFT_CLASS).startWithContext(spark._jsparkSession.sqlContext())
    log.info("sql-server: listening on %s", jdbc_url(conf.host, conf.port, cfg.lakehouse.schema))

    stopping = {"now": False}

    def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
        stopping["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    last = time.monotonic()
    while not stopping["now"]:
        time.sleep(0.5)
        if conf.refresh_seconds and time.monotonic() - last >= conf.refresh_seconds:
            last = time.monotonic()
            try:
                _register_all(spark, cfg)
            except Exception as exc:  # noqa: BLE001 - keep serving what is registered
                log.warning("sql-server: registering new tables failed: %s", exc)
    log.info("sql-server: stopping")
    spark.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover - the detached server process
    sys.exit(serve(sys.argv[1]))
