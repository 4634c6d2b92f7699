"""`ulv-spark <command>`: one entry point for every job (also used by jobs/*.py).

Each command is a stage function ``run_<stage>(ctx, **options) -> Summary`` in its package;
this module owns the argument parsing and maps the errors the stages raise to exit codes. No
library module imports this one.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Optional

from ulv_spark.config import ConfigError, load_config, to_dict
from ulv_spark.context import JobContext
from ulv_spark.errors import EXIT_FAILED, EXIT_USAGE, JobFailed
from ulv_spark.nightly import STAGES
from ulv_spark.runtime import get_logger, new_run_id, stdout_to_stderr


@dataclass(frozen=True)
class Option:
    """A command-line option of one command: ``flags`` and argparse keywords; ``dest`` is the stage kwarg."""

    flags: tuple[str, ...]
    dest: str
    kwargs: dict


def _flag(name: str, dest: str, help_text: str) -> Option:
    return Option((name,), dest, {"action": "store_true", "help": help_text})


@dataclass(frozen=True)
class Command:
    function: str          # "module:function" of the stage function
    help: str
    options: tuple[Option, ...] = ()

    def load(self):
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


COMMANDS: dict[str, Command] = {
    "generate": Command("ulv_spark.synthetic.job:run_generate", "write a synthetic order log with known truth"),
    "ingest": Command("ulv_spark.ingest.job:run_ingest",
                      "load the order log and optional inputs into bronze Delta tables", (
        _flag("--dry-run", "dry_run", "read a sample of each source and print the mapping, parsed types, a few "
                                      "parsed rows and the reject counts by reason; write nothing"),
        Option(("--sample-rows",), "sample_rows", {"type": int, "default": 1000, "metavar": "N",
                                                   "help": "rows read per source by --dry-run (default 1000)"}),
        _flag("--full-reload", "full_reload", "read every source whole even with ingest.incremental (the "
                                              "streaming checkpoints stay as they are)"),
    )),
    "features": Command("ulv_spark.features.job:run_features",
                        "build user_features and training_examples for --as-of"),
    "train": Command("ulv_spark.train.job:run_train", "train the model with TorchDistributor (Petastorm feed)", (
        _flag("--fresh", "fresh", "ignore this run's checkpoints and start over"),
        _flag("--export-feed", "export_feed",
              "only write the Arrow feed (train/, val/, feed.json) under train.parquet_dir, for "
              "`python -m ulv_spark.train.torchrun_main --data <feed_dir>` on a machine without Spark"),
    )),
    "score": Command("ulv_spark.score.job:run_score", "write user_value, user_churn, promo_uplift, user_segments"),
    "segment": Command("ulv_spark.segments.job:run_segment",
                       "learned segments from user_embeddings + scores (fit once per model, else assign) -> "
                       "user_segments.learned_segment, segment_profiles, segment_transitions"),
    "plan": Command("ulv_spark.plan.job:run_plan",
                    "budgeted promotion plan from promo_uplift (plan.*) -> promo_plan, campaign_forecast"),
    "evaluate": Command("ulv_spark.evaluate.job:run_evaluate",
                        "backtest the model against baselines; metrics + HTML report", (
        Option(("--dataset",), "dataset", {"default": None,
                                           "help": "name recorded with the metrics (default: evaluate.dataset)"}),
        Option(("--report",), "report", {"default": None,
                                         "help": "HTML report path (default: under evaluate.report_dir)"}),
    )),
    "nightly": Command("ulv_spark.nightly:run_nightly", "ingest -> embed -> features -> train (when due) -> score -> gates -> segment -> plan", (
        Option(("--only",), "only", {"choices": STAGES, "default": None,
                                     "help": "run one stage (with its gates) only"}),
        Option(("--from",), "start_from", {"choices": STAGES, "default": None,
                                           "help": "run this stage and every later one (rerun a failed night "
                                                   "from the stage that failed)"}),
        _flag("--retrain", "retrain", "train even when the current model is not due"),
        _flag("--evaluate", "evaluate", "also run the evaluation (default: nightly.evaluate)"),
    )),
    "embed": Command("ulv_spark.text.job:run_embed",
                     "embed new or changed product and review texts into product_embeddings / review_embeddings"),
    "tables": Command("ulv_spark.tables_cmd:run_tables",
                      "list the lakehouse tables with their versions and row counts"),
    "sql-server": Command("ulv_spark.serving.job:run_sql_server",
                          "Spark's Thrift JDBC/ODBC server over the lakehouse (sql_server.host:port)", (
        Option(("action",), "action", {"choices": ("start", "stop", "status"),
                                       "help": "start (waits until the port answers), stop, or status"}),
    )),
}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def build_parser(commands: Optional[dict[str, Command]] = None) -> argparse.ArgumentParser:
    commands = commands if commands is not None else COMMANDS
    parser = argparse.ArgumentParser(prog="ulv-spark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        p.add_argument("--conf", default=None, help="YAML conf file (default: $ULV_SPARK_CONF or conf/local.yaml)")
        p.add_argument("--as-of", type=_date, default=None, help="run date YYYY-MM-DD (default: run.as_of in conf, else today UTC)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a conf value, e.g. --set train.epochs=2 (repeatable)")
        p.add_argument("--run-id", default=None, help="run id to record (default: generated)")
        for option in command.options:
            if option.flags[0].startswith("-"):
                p.add_argument(*option.flags, dest=option.dest, **option.kwargs)
            else:  # a positional argument: its name is its dest
                p.add_argument(option.dest, **option.kwargs)
    return parser


def stage_options(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """The stage function's keyword arguments from the parsed command line."""
    return {option.dest: getattr(args, option.dest) for option in command.options}


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = get_logger("ulv_spark.cli")
    try:
        cfg = load_config(args.conf, args.overrides)
    except ConfigError as exc:
        print(f"ulv-spark: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ctx = JobContext(cfg=cfg, as_of=cfg.run_date(args.as_of), run_id=args.run_id or new_run_id(args.command),
                     command=args.command)
    log.info("%s as_of=%s run_id=%s conf=%s", args.command, ctx.as_of, ctx.run_id, cfg.source_file)
    log.debug("resolved conf: %s", json.dumps(to_dict(cfg), default=str))
    command = COMMANDS[args.command]
    try:
        with stdout_to_stderr():  # stdout carries the summary alone: library and worker output goes to stderr
            summary = command.load()(ctx, **stage_options(command, args)) or {}
    except JobFailed as exc:
        print(f"ulv-spark {args.command}: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"ulv-spark: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"command": args.command, "as_of": ctx.as_of.isoformat(), "run_id": ctx.run_id,
                      **summary}, indent=2, default=str))
    return int(summary.get("exit_code", 0)) if isinstance(summary, dict) else 0


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
