"""Train from an exported Arrow feed without Spark (plain torchrun, e.g. on a GPU machine).

    torchrun --standalone --nproc_per_node=N -m ulv_spark.train.torchrun_main --data <feed_dir> [--conf c.yaml]
    python -m ulv_spark.train.torchrun_main --data <feed_dir> --set train.epochs=2   # one process

``<feed_dir>`` is what ``ulv-spark train --export-feed`` writes (``train/``, ``val/``,
optional ``pretrain/``, ``feed.json``). The same :func:`ulv_spark.train.loop.train_rank` runs as under TorchDistributor,
with the Arrow loader; the architecture and optimisation come from the conf, the data's
shapes and statistics from feed.json. Rank 0 prints the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ulv_spark.train.torchrun_main", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="exported feed directory (train/, val/, feed.json)")
    parser.add_argument("--conf", default=None, help="YAML conf (default: $ULV_SPARK_CONF or conf/local.yaml if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a conf value, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--model-root", default=None, help="where the model version goes (default: train.model_dir)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="this run's checkpoints (default: train.checkpoint_dir/<feed dir name>)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    return parser


def _load_conf(path: Optional[str], overrides: list[str]):
    from ulv_spark.config import load_config

    path = path or os.environ.get("ULV_SPARK_CONF")
    if path is None and Path("conf/local.yaml").is_file():
        path = "conf/local.yaml"
    if path is not None:
        return load_config(path, overrides)
    with tempfile.TemporaryDirectory() as tmp:  # defaults only: an empty file still validates overrides
        empty = Path(tmp, "empty.yaml")
        empty.write_text("{}\n", encoding="utf-8")
        return load_config(empty, overrides)


def build_spec(args):
    """The :class:`~ulv_spark.train.spec.TrainSpec` for this process from the feed and the conf."""
    import dataclasses

    from ulv_spark.config import to_dict
    from ulv_spark.train import feed as feeds
    from ulv_spark.train.spec import ModelMeta, TrainSpec, model_spec

    cfg = _load_conf(args.conf, args.overrides)
    data = Path(args.data).resolve()
    info = json.loads((data / feeds.FEED_META_FILE).read_text(encoding="utf-8"))
    meta = ModelMeta.from_dict(info["meta"])
    train_feed = feeds.arrow_feed(str(data / "train"))
    val_feed = feeds.arrow_feed(str(data / "val")) if (data / "val").is_dir() else None
    pretrain_feed = feeds.arrow_feed(str(data / "pretrain")) if (data / "pretrain").is_dir() else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    train_cfg = cfg.train
    if args.model_root:
        train_cfg = dataclasses.replace(train_cfg, model_dir=str(Path(args.model_root).resolve()))
    spec = TrainSpec(
        train=train_cfg,
        model=model_spec(train_cfg, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                         n_features=len(meta.feature_columns), n_arms=len(meta.arms),
                         text_dims=int(info.get("model", {}).get("text_dims", 0))),
        meta=meta, train_feed=train_feed, val_feed=feeds.usable_validation(val_feed, world),
        checkpoint_dir=str(Path(args.checkpoint_dir).resolve()) if args.checkpoint_dir
        else str(Path(cfg.train.checkpoint_dir) / data.name),
        batch_size=feeds.effective_batch_size(train_cfg.batch_size, train_feed.rows, world),
        use_gpu=train_cfg.use_gpu, pretrain_feed=pretrain_feed, label_stats=info.get("label_stats", {}),
        conf=to_dict(cfg))
    return spec.restarted() if args.fresh else spec


def main(argv: Optional[list[str]] = None) -> int:
    from ulv_spark.train.loop import train_rank

    args = build_parser().parse_args(argv)
    summary = train_rank(build_spec(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2, default=str))
    return 0 if summary["status"] == "finished" else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
