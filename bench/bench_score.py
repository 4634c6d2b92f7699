"""Inference throughput: users/s through the pandas UDF (mapInPandas) vs the bare model forward.

Same model, same rows, one process each, on this machine:

* ``bare_forward``: `train.model.predict_arrays` on numpy arrays already in memory (the
  practical limit: no Spark, no Arrow, no pandas);
* ``predict_batch``: `score.predict.predict_batch` on one pandas frame (adds the pandas ->
  numpy conversion the UDF does);
* ``pandas_udf``: `score.udf.score_users` over a Parquet copy of the rows read by Spark
  (local[2], the table's file splits as tasks), forced with the ``noop`` sink; ``cold`` is the
  first run (Python workers start and load the model), ``warm`` the best of the next runs;
* ``single_core``: the bare forward with one torch thread vs the UDF in one task (one Python
  worker, one thread): the UDF's own overhead.
The variants run interleaved, best of ``--repeats`` each, so they share the machine's load.

Run: ``.venv/bin/python -m bench.bench_score [--users 20000] [--batch-sizes 1024,4096] [--repeats 3]``.
Prints and writes ``bench/results/score.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def build_model(model_root: str, *, seq_len: int, n_features: int, arms: list[str], vocab: int):
    """A model of the default conf's size (encoder 64 x 2 layers), saved with the training code."""
    import torch

    from ulv_spark.config import EncoderConf
    from ulv_spark.train.artifacts import save_model
    from ulv_spark.train.model import build_model as build
    from ulv_spark.train.spec import ModelMeta, ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=vocab, seq_len=seq_len, n_features=n_features, n_arms=len(arms),
                     encoder=EncoderConf(dropout=0.0))
    columns = [f"f{i:02d}" for i in range(n_features)]
    meta = ModelMeta(version="bench", feature_columns=columns, feature_mean=[1.0] * n_features,
                     feature_std=[1.0] * n_features, seq_len=seq_len, vocab_size=vocab, vocab_fingerprint="bench",
                     arms=arms, arm_campaigns={a: "c1" for a in arms}, horizon_days=90, trained_as_of="2025-01-01")
    return save_model(build(spec), meta, model_root, metrics={}, conf={})


def make_rows(n: int, *, seq_len: int, n_features: int, vocab: int, seed: int = 0):
    """pandas frame shaped like user_features: user_id, seq_tokens, seq_mask, f00..fNN."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, seq_len + 1, n)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = np.where(mask == 1, rng.integers(4, vocab, (n, seq_len)), 0).astype(np.int32)
    data = {"user_id": [f"u{i:08d}" for i in range(n)], "seq_tokens": list(tokens), "seq_mask": list(mask)}
    for j in range(n_features):
        data[f"f{j:02d}"] = rng.gamma(1.5, 20.0, n)
    return pd.DataFrame(data), tokens, mask


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--batch-sizes", default="1024,4096")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--features", type=int, default=40)
    args = parser.parse_args(argv)

    import torch

    from ulv_spark.config import LakehouseConf, SparkConf
    from ulv_spark.score import udf
    from ulv_spark.score.predict import predict_batch
    from ulv_spark.spark import get_spark
    from ulv_spark.train.model import predict_arrays

    vocab, arms = 200, ["control", "coupon_10", "free_shipping"]
    work = Path(tempfile.mkdtemp(prefix="bench_score_"))
    model_dir = build_model(str(work / "models"), seq_len=args.seq_len, n_features=args.features, arms=arms,
                            vocab=vocab)
    model, meta = udf.load_model_once(model_dir, "cpu")
    pdf, tokens, mask = make_rows(args.users, seq_len=args.seq_len, n_features=args.features, vocab=vocab)
    tabular = pdf[meta.feature_columns].to_numpy(dtype=np.float64)
    n = args.users

    load_start = os.getloadavg()[0]
    spark = get_spark(SparkConf(master="local[2]", app_name="bench_score", shuffle_partitions=2, driver_memory="2g"),
                      LakehouseConf(root=str(work / "lakehouse"), schema="bench"))
    parquet = str(work / "features.parquet")
    spark.createDataFrame(pdf).repartition(2).write.parquet(parquet)
    features = spark.read.parquet(parquet)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    def run_udf(batch_size, source=features):
        scored = udf.score_users(source, model_dir=model_dir, feature_columns=meta.feature_columns)
        with udf.arrow_batch_size(spark, batch_size):
            scored.write.format("noop").mode("overwrite").save()

    cold = {b: _best(lambda: run_udf(b), 1) for b in batch_sizes}
    # interleaved repeats, best of each: the shared machine's load drifts, so every variant
    # must see the same conditions for the ratios to mean something
    threads = torch.get_num_threads()

    def bare_one_thread():
        torch.set_num_threads(1)
        try:
            predict_arrays(model, meta, tokens, mask, tabular)
        finally:
            torch.set_num_threads(threads)

    one_task = features.coalesce(1)
    runs = {"bare": lambda: predict_arrays(model, meta, tokens, mask, tabular),
            "frame": lambda: predict_batch(pdf, model, meta),
            **{b: (lambda b=b: run_udf(b)) for b in batch_sizes},
            # one core each (a task's Python worker runs torch with OMP_NUM_THREADS = 1): the
            # UDF's own overhead, less sensitive to how a busy machine shares its cores
            "bare_1t": bare_one_thread, "udf_1task": lambda: run_udf(max(batch_sizes), one_task)}
    best = {key: float("inf") for key in runs}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            best[key] = min(best[key], _best(fn, 1))
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    bare_s, frame_s = best["bare"], best["frame"]
    udf_results = [{"batch_size": b, "cold_seconds": round(cold[b], 3), "warm_seconds": round(best[b], 3),
                    "users_per_s": round(n / best[b]), "ratio_to_bare_forward": round(bare_s / best[b], 3)}
                   for b in batch_sizes]

    result = {
        "benchmark": "score", "users": n, "seq_len": args.seq_len, "features": args.features, "arms": len(arms),
        "model": "BERT encoder hidden 64, 2 layers, 4 heads (EncoderConf defaults) + tabular MLP + heads",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "load_average_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "command": "python -m bench.bench_score " + " ".join(argv if argv is not None else sys.argv[1:]),
        "bare_forward": {"seconds": round(bare_s, 3), "users_per_s": round(n / bare_s)},
        "predict_batch": {"seconds": round(frame_s, 3), "users_per_s": round(n / frame_s),
                          "ratio_to_bare_forward": round(bare_s / frame_s, 3)},
        "pandas_udf": udf_results,
        "single_core": {"batch_size": max(batch_sizes),
                        "bare_forward_1_thread": {"seconds": round(best["bare_1t"], 3),
                                                  "users_per_s": round(n / best["bare_1t"])},
                        "pandas_udf_1_task": {"seconds": round(best["udf_1task"], 3),
                                              "users_per_s": round(n / best["udf_1task"])},
                        "ratio_to_bare_forward": round(best["bare_1t"] / best["udf_1task"], 3)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "score.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
