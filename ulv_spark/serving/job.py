"""`ulv-spark sql-server start|stop|status`: the Thrift JDBC/ODBC server over the lakehouse."""
from __future__ import annotations

from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed

ACTIONS = ("start", "stop", "status")


def run_sql_server(ctx: JobContext, *, action: str) -> Summary:
    """Start (and wait until it answers), stop, or report the lakehouse's SQL server; no Spark in this process."""
    from ulv_spark.config import to_dict
    from ulv_spark.serving import thrift

    if action not in ACTIONS:
        raise JobFailed(f"unknown sql-server action {action!r}; one of {', '.join(ACTIONS)}")
    try:
        if action == "start":
            return thrift.start(ctx.cfg, config_dict=to_dict(ctx.cfg))
        if action == "stop":
            return thrift.stop(ctx.cfg)
        return thrift.status(ctx.cfg)
    except RuntimeError as exc:
        raise JobFailed(str(exc)) from None
