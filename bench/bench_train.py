"""Training feed vs training step: rows/s each loader delivers, rows/s one training step consumes.

For each loader (Petastorm ``make_spark_converter`` + ``make_torch_dataloader``, and the Arrow
loader over Parquet files) on one process:

* ``materialise_seconds``: training_examples -> the loader's files (Spark jobs included);
* ``loader_rows_per_s``: batches pulled from the loader with nothing else running;
* ``pipeline_rows_per_s``: the real fine-tuning epoch loop (``loop.train_epoch``) fed by the loader.

And with batches already in memory (the consumption limit):

* ``finetune_step_rows_per_s`` / ``pretrain_step_rows_per_s``: forward + backward + AdamW step
  of the model at the conf's default size (encoder hidden 64 x 2 layers, batch 256, L = 32,
  the features vocabulary), fine-tuning heads or masked-event pretraining.

``loader / step`` > 1 means the loader keeps up with training. Every rate is given per wall-clock
second and per CPU second of the benchmark process (all its threads): on a shared machine the
wall figures swing with other people's load, the CPU figures much less. Variants run
interleaved, best of ``--repeats``. ``--scaling 1,2`` also trains from an
exported Arrow feed with ``torchrun`` on 1..N processes (DDP) and reports rows/s per run.
``--no-spark`` skips Petastorm and Spark (a machine with torch only); ``--device cuda`` times
the step on a GPU (bf16 autocast as in training).

Run: ``.venv/bin/python -m bench.bench_train [--rows 40000] [--steps 60] [--repeats 3] [--scaling 1,2]``.
Prints and writes ``bench/results/train.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import write_results

RESULTS = Path(__file__).resolve().parent / "results"
AS_OF = "2025-10-01"


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=40000)
    p.add_argument("--steps", type=int, default=60, help="batches timed per measurement")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (this machine is shared: 1 avoids spinning)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-spark", action="store_true", help="Arrow loader only, feed written without Spark")
    p.add_argument("--scaling", default="", help="comma-separated process counts for a torchrun scaling run")
    return p.parse_args(argv)


def _model_spec(meta, n_arms):
    from ulv_spark.config import TrainConf
    from ulv_spark.train.spec import model_spec

    return model_spec(TrainConf(), vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                      n_features=len(meta.feature_columns), n_arms=n_arms)


def _spec(prepared_model, meta, train_feed, args, work):
    from ulv_spark.config import TrainConf
    from ulv_spark.train.spec import TrainSpec

    return TrainSpec(train=TrainConf(), model=prepared_model, meta=meta, train_feed=train_feed, val_feed=None,
                     checkpoint_dir=str(work / "ck"), batch_size=args.batch_size,
                     use_gpu=args.device.startswith("cuda"))


def _rates(rows: int, wall: float, cpu: float) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second of this process, all its threads)."""
    return rows / wall, rows / max(cpu, 1e-9)


def _loader_rate(feed, args, steps):
    from ulv_spark.train import feed as feeds

    with feeds.open_batches(feed, rank=0, world=1, batch_size=args.batch_size, shuffle=True, seed=1,
                            workers=2, shuffle_buffer=1024) as batches:
        next(batches)  # reader start-up is not throughput
        start, cpu, rows = time.perf_counter(), time.process_time(), 0
        for _ in range(steps):
            batch = next(batches)
            rows += int(batch["row_id"].shape[0])
        return _rates(rows, time.perf_counter() - start, time.process_time() - cpu)


def _pipeline_rate(feed, model, spec, args, steps):
    import dataclasses

    import torch

    from ulv_spark.train import feed as feeds
    from ulv_spark.train import loop

    device = torch.device(args.device)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps_per_epoch=steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    with feeds.open_batches(feed, rank=0, world=1, batch_size=args.batch_size, shuffle=True, seed=2, workers=2,
                            shuffle_buffer=1024, steps_cap=steps) as batches:
        next(batches)
        cpu = time.process_time()
        stats = loop.train_epoch(loop.FINETUNE, model, optimizer, batches, spec, device, autocast)
        return _rates(stats["rows"], stats["seconds"], time.process_time() - cpu)


def _step_rates(model, batch, spec, args, steps):
    import torch

    from ulv_spark.train import feed as feeds
    from ulv_spark.train.losses import mask_tokens, masked_event_loss, multitask_loss

    device = torch.device(args.device)
    b = {k: v.to(device) for k, v in batch.items()}
    tokens, mask = b[feeds.TOKENS].long(), b[feeds.MASK].long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    use_bf16 = device.type == "cuda"
    rates = {}
    for stage in ("finetune", "pretrain"):
        for i in range(steps + 3):
            if i == 3:  # warm-up steps excluded
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, cpu = time.perf_counter(), time.process_time()
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext():
                if stage == "finetune":
                    loss, _ = multitask_loss(model(tokens, mask, b[feeds.FEATURES].float()), b)
                else:
                    inputs, labels = mask_tokens(tokens, mask, spec.model.vocab_size, spec.train.mlm_probability)
                    out = model(inputs, mask, mlm_labels=labels)
                    loss, _ = masked_event_loss(out["mlm_logits"], out["mlm_labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates[stage] = _rates(steps * tokens.shape[0], time.perf_counter() - start, time.process_time() - cpu)
    return rates


def _scaling(feed_dir: Path, counts: list[int], args, work: Path) -> list[dict]:
    out = []
    for n in counts:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "ulv_spark.train.torchrun_main", "--data", str(feed_dir), "--model-root", str(work / f"m{n}"),
               "--checkpoint-dir", str(work / f"ck{n}"), "--fresh", "--set", "train.epochs=2",
               "--set", "train.pretrain_epochs=0", "--set", f"train.batch_size={args.batch_size}",
               "--set", f"train.use_gpu={'true' if args.device.startswith('cuda') else 'false'}",
               "--set", f"train.steps_per_epoch={max(4, args.steps // n)}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
        if done.returncode != 0:
            out.append({"processes": n, "error": done.stderr[-2000:]})
            continue
        summary = json.loads(done.stdout[done.stdout.index("{"):])
        rate = summary["metrics"]["rows_per_second"]  # last epoch (the first pays start-up)
        out.append({"processes": n, "rows_per_s": round(rate), "seconds": summary["seconds"]})
    base = next((r["rows_per_s"] for r in out if r.get("processes") == counts[0] and "rows_per_s" in r), None)
    for r in out:
        if base and "rows_per_s" in r:
            r["speedup_vs_first"] = round(r["rows_per_s"] / base, 2)
    return out


def main(argv=None) -> dict:
    args = _parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ulv_spark.config import FeaturesConf
    from bench import train_data as synthetic
    from ulv_spark.train import feed as feeds
    from ulv_spark.train.model import build_model
    from ulv_spark.train.spec import ModelMeta

    features = FeaturesConf()
    seq_len = features.sequence_length
    from ulv_spark.features.sequences import vocab_size as features_vocab

    vocab = features_vocab(features)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    load_start = os.getloadavg()[0]
    feeds_by_loader, materialise = {}, {}
    spark = None
    if args.no_spark:
        start = time.perf_counter()
        synthetic.write_synthetic_feed(str(work / "arrow"), args.rows, files=8, seq_len=seq_len, vocab_size=vocab)
        materialise["arrow"] = time.perf_counter() - start
        feeds_by_loader["arrow"] = feeds.arrow_feed(str(work / "arrow" / "train"))
        meta = ModelMeta.from_dict(json.loads((work / "arrow" / "feed.json").read_text())["meta"])
        export_dir = work / "arrow"
    else:
        from ulv_spark.config import LakehouseConf, SparkConf, TrainConf
        from ulv_spark.spark import get_spark
        from ulv_spark.train import prepare

        spark = get_spark(SparkConf(master="local[2]", app_name="bench_train", shuffle_partitions=2,
                                    driver_memory="2g"), LakehouseConf(root=str(work / "lakehouse"), schema="bench"))
        examples = synthetic.synthetic_training_examples(spark, args.rows, seq_len=seq_len, vocab_size=vocab,
                                                         origins=3, partitions=2).cache()
        examples.count()
        cfg = TrainConf(petastorm_cache=str(work / "petastorm"), parquet_dir=str(work / "feed"), validation_share=0.0,
                        feed_files=8)
        for loader in ("petastorm", "arrow"):
            start = time.perf_counter()
            prepared = prepare.prepare(spark, examples, train_cfg=cfg, seq_len=seq_len, vocab_size=vocab,
                                   vocab_fingerprint="bench", horizon_days=90, as_of=AS_OF, key=loader, loader=loader)
            materialise[loader] = time.perf_counter() - start
            feeds_by_loader[loader] = prepared.train
            meta = prepared.meta
        export_dir = Path(cfg.parquet_dir) / "arrow"  # prepare.prepare wrote feed.json there

    spec_model = _model_spec(meta, len(meta.arms))
    torch.manual_seed(0)
    model = build_model(spec_model).to(args.device)
    spec = _spec(spec_model, meta, feeds_by_loader["arrow"], args, work)
    with feeds.open_batches(feeds_by_loader["arrow"], rank=0, world=1, batch_size=args.batch_size) as batches:
        batch = next(batches)

    best: dict[str, list[float]] = {}  # name -> [best wall rows/s, best CPU rows/s]

    def keep(name, rates):
        old = best.get(name, [0.0, 0.0])
        best[name] = [max(old[0], rates[0]), max(old[1], rates[1])]

    for _ in range(args.repeats):
        # interleaved, best of each: the shared machine's load drifts
        for loader, feed in feeds_by_loader.items():
            keep(f"{loader}_loader", _loader_rate(feed, args, args.steps))
            keep(f"{loader}_pipeline", _pipeline_rate(feed, model, spec, args, args.steps // 2))
        for stage, rates in _step_rates(model, batch, spec, args, args.steps // 2).items():
            keep(f"{stage}_step", rates)

    def pair(name):
        return {"wall": round(best[name][0]), "cpu": round(best[name][1])}

    def ratio(a, b):
        return {"wall": round(best[a][0] / best[b][0], 2), "cpu": round(best[a][1] / best[b][1], 2)}

    loaders = {}
    for loader in feeds_by_loader:
        loaders[loader] = {
            "materialise_seconds": round(materialise[loader], 2),
            "loader_rows_per_s": pair(f"{loader}_loader"),
            "pipeline_rows_per_s": pair(f"{loader}_pipeline"),
            "loader_over_finetune_step": ratio(f"{loader}_loader", "finetune_step"),
            "loader_over_pretrain_step": ratio(f"{loader}_loader", "pretrain_step"),
            "pipeline_over_finetune_step": ratio(f"{loader}_pipeline", "finetune_step"),
        }
    counts = [int(c) for c in args.scaling.split(",") if c.strip()]
    scaling = _scaling(export_dir, counts, args, work) if counts else []
    for loader_feed in feeds_by_loader.values():
        feeds.delete_feed(loader_feed)
    if spark is not None:
        spark.stop()
    shutil.rmtree(work, ignore_errors=True)

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else None
    result = {
        "benchmark": "train", "rows": args.rows, "batch_size": args.batch_size, "seq_len": seq_len,
        "vocab_size": vocab, "features": len(meta.feature_columns), "arms": len(meta.arms), "device": args.device,
        "model": "BERT encoder hidden 64, 2 layers, 4 heads (EncoderConf defaults) + tabular MLP + heads",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__} ({args.threads} threads)" + (f", {gpu}" if gpu else ""),
        "load_average_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "command": "python -m bench.bench_train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rates": "rows per wall-clock second and per CPU second of the process (all threads); on a shared "
                 "machine the CPU figures are the stable ones",
        "finetune_step_rows_per_s": pair("finetune_step"),
        "pretrain_step_rows_per_s": pair("pretrain_step"),
        "loaders": loaders,
        "scaling": scaling,
    }
    return write_results(result, RESULTS / "train.json")


if __name__ == "__main__":
    main()
