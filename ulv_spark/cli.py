"""`ulv-spark <command>`: one entry point for every job (also used by jobs/*.py).

Each command lives in a module exposing ``add_arguments(parser)`` (optional) and
``run(ctx, args) -> dict`` (a summary printed at the end). A command whose module is not
part of this build is simply not offered.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import sys
from typing import Optional

from ulv_spark.config import ConfigError, load_config, to_dict
from ulv_spark.context import JobContext
from ulv_spark.errors import EXIT_FAILED, EXIT_USAGE, JobFailed
from ulv_spark.runtime import get_logger, new_run_id

# name -> (module, help)
COMMANDS = {
    "generate": ("ulv_spark.ingest.generate_job", "write a synthetic order log with known truth"),
    "ingest": ("ulv_spark.ingest.job", "load the order log and optional inputs into bronze Delta tables"),
    "features": ("ulv_spark.features.job", "build user_features and training_examples for --as-of"),
    "train": ("ulv_spark.train.job", "train the model with TorchDistributor (Petastorm feed)"),
    "score": ("ulv_spark.score.job", "write user_value, user_churn, promo_uplift, user_segments"),
    "evaluate": ("ulv_spark.evaluate.job", "backtest the model against baselines; metrics + HTML report"),
    "nightly": ("ulv_spark.nightly", "ingest -> features -> train (when due) -> score -> gates"),
    "tables": ("ulv_spark.tables_cmd", "list the lakehouse tables with their versions and row counts"),
}

def available_commands() -> dict:
    out = {}
    for name, (module, help_text) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = (module, help_text)
    return out


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def build_parser(commands: Optional[dict] = None) -> argparse.ArgumentParser:
    commands = commands if commands is not None else available_commands()
    parser = argparse.ArgumentParser(prog="ulv-spark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--conf", default=None, help="YAML conf file (default: $ULV_SPARK_CONF or conf/local.yaml)")
        p.add_argument("--as-of", type=_date, default=None, help="run date YYYY-MM-DD (default: run.as_of in conf, else today UTC)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a conf value, e.g. --set train.epochs=2 (repeatable)")
        p.add_argument("--run-id", default=None, help="run id to record (default: generated)")
        mod = importlib.import_module(module)
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    commands = available_commands()
    parser = build_parser(commands)
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
    module = importlib.import_module(commands[args.command][0])
    try:
        summary = module.run(ctx, args) or {}
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
