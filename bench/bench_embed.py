"""Text embedding throughput: texts/s per core, bare `TextEncoder.encode` vs the Spark pandas UDF.

Input: ``--texts`` generated product titles of realistic length (a seeded mix of brand, gender,
adjectives, material, product noun, colour, size and pack details: 26-123 characters, mean
68; 19 word-piece tokens on average, at most 33), all distinct. The encoder is the packaged all-MiniLM-L6-v2 (max_length 256,
``--batch-size`` texts per forward pass, as ``embed.batch_size``). Variants, in one process:

* ``bare_1thread``: `TextEncoder.encode` on the Python list with one torch thread (the practical
  limit per core: no Spark, no Arrow, no pandas);
* ``udf_1task``: `text.udf.embed_texts_df` over a Parquet copy of the texts read by Spark
  (local[2]), all texts in one task (one Python worker, one thread; Spark sets
  OMP_NUM_THREADS = spark.task.cpus = 1), forced with the ``noop`` sink: the UDF's own overhead
  against ``bare_1thread``;
* ``udf_2tasks``: the same spread over 2 tasks (both cores of local[2]); per core = / 2.

``cold`` is the first UDF run (Python workers start and load the model); the reported UDF
figures are the best of the warm runs. The variants run interleaved, best of ``--repeats``
each, so they share the machine's load. Besides wall time each variant reports CPU seconds:
this process for the bare run, the Spark JVM's Python worker processes (descendants of the JVM,
from /proc, per process) and the JVM itself for the UDF runs; on a shared machine texts per CPU second is the comparable figure.

Run: ``.venv/bin/python -m bench.bench_embed [--texts 3000] [--batch-size 64] [--repeats 3]``.
Prints and writes ``bench/results/embed.json``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench._common import machine, timed, write_results

RESULTS = Path(__file__).resolve().parent / "results"

BRANDS = ["Acme", "Northwind", "Contoso", "Fabrikam", "Globex", "Initech", "Umbrella", "Vandelay", "Wonka",
          "Stark", "Hooli", "Soylent"]
GENDERS = ["", "", "Men's", "Women's", "Kids'", "Unisex"]
ADJECTIVES = ["lightweight", "waterproof", "breathable", "non-stick", "stainless", "organic", "wireless",
              "ergonomic", "insulated", "foldable", "rechargeable", "slim-fit", "heavy-duty", "eco-friendly",
              "noise-cancelling", "quick-dry", "premium", "vintage", "compact", "adjustable"]
MATERIALS = ["", "", "leather", "cotton", "merino wool", "bamboo", "cast iron", "ceramic", "aluminium", "recycled",
             "silicone", "oak", "glass", "carbon"]
NOUNS = ["running shoes", "hiking boots", "rain jacket", "t-shirt", "saucepan", "frying pan", "chef's knife",
         "coffee grinder", "headphones", "bluetooth speaker", "phone case", "desk lamp", "office chair",
         "yoga mat", "water bottle", "backpack", "duvet cover", "bath towel set", "green tea", "dog bed",
         "garden hose", "cordless drill", "board game", "notebook", "sunglasses"]
COLOURS = ["black", "white", "navy", "red", "olive", "grey", "sand", "burgundy", "sky blue", "charcoal"]
DETAILS = ["size 42", "size M", "28 cm", "2 litres", "500 ml", "pack of 3", "100 bags", "USB-C", "1.5 m",
           "for induction hobs", "with carry bag", "dishwasher safe", "2-year warranty", "gift box"]


def product_titles(n: int, seed: int = 11) -> list[str]:
    """n distinct product titles like a shop catalog's (4-20 words)."""
    rng = np.random.default_rng(seed)
    titles, seen = [], set()
    while len(titles) < n:
        words = [rng.choice(BRANDS), rng.choice(GENDERS),
                 *rng.choice(ADJECTIVES, size=int(rng.integers(1, 4)), replace=False),
                 rng.choice(MATERIALS), rng.choice(NOUNS)]
        tail = []
        if rng.random() < 0.8:
            tail.append(rng.choice(COLOURS))
        tail += list(rng.choice(DETAILS, size=int(rng.integers(0, 3)), replace=False))
        title = " ".join(w for w in words if w) + ("".join(f", {t}" for t in tail))
        title = title[0].upper() + title[1:]
        if title not in seen:
            seen.add(title)
            titles.append(title)
    return titles


def _process_cpu(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        out += kids
        frontier = kids
    return out


def python_worker_cpu(jvm_pid: int) -> dict:
    """pid -> CPU seconds so far of the JVM's descendants: the pyspark daemon and its Python workers.

    Per process, because the daemon ignores SIGCHLD: a worker that Spark retires (idle timeout)
    is reaped without its time reaching the daemon's cutime. Diff two readings with
    :func:`cpu_delta`; in local mode the JVM has no other child processes.
    """
    out = {}
    for pid in _descendants(jvm_pid):
        try:
            out[pid] = _process_cpu(pid)
        except OSError:
            continue
    return out


def cpu_delta(before: dict, after: dict) -> float:
    """CPU seconds used between two readings by the processes alive at the second one."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def worker_threads(spark) -> list:
    """(OMP_NUM_THREADS, torch threads) as seen inside the Python workers of a 2-task job."""
    import pandas as pd

    def probe(batches):
        import torch

        for _ in batches:
            yield pd.DataFrame({"omp": [os.environ.get("OMP_NUM_THREADS", "")], "torch": [torch.get_num_threads()]})

    rows = spark.range(2, numPartitions=2).mapInPandas(probe, schema="omp string, torch int").collect()
    return sorted({(r["omp"], r["torch"]) for r in rows})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "embed.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import time

    import torch

    from ulv_spark.config import LakehouseConf, SparkConf
    from ulv_spark.spark import get_spark
    from ulv_spark.text.encoder import describe_encoder, load_encoder
    from ulv_spark.text.normalise import text_hash
    from ulv_spark.text.udf import embed_texts_df

    results = {"machine": machine(), "texts": args.texts, "batch_size": args.batch_size, "repeats": args.repeats}
    titles = product_titles(args.texts)
    lengths = [len(t) for t in titles]
    info = describe_encoder()
    torch.set_num_threads(1)
    encoder = load_encoder(device="cpu")
    tokens = [len(ids) for ids in encoder.tokenizer(titles)["input_ids"]]
    results["input"] = {"chars_mean": round(float(np.mean(lengths)), 1), "chars_min": min(lengths),
                        "chars_max": max(lengths), "tokens_mean": round(float(np.mean(tokens)), 1),
                        "tokens_max": max(tokens), "examples": titles[:3]}
    results["model_id"] = info.model_id

    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        spark = get_spark(SparkConf(master="local[2]", app_name="bench_embed", shuffle_partitions=2,
                                    driver_memory="2g"), LakehouseConf(root=str(work / "lakehouse"), schema="bench"))
        jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        parquet = str(work / "titles.parquet")
        spark.createDataFrame([(text_hash(t), t) for t in titles], "text_hash string, text string") \
            .repartition(2).write.parquet(parquet)
        source = spark.read.parquet(parquet)

        def bare():
            cpu = time.process_time()
            seconds, out = timed(lambda: encoder.encode(titles, batch_size=args.batch_size))
            assert out.vectors.shape == (args.texts, info.dim)
            return seconds, time.process_time() - cpu, None

        def udf(tasks: int):
            cpu, jvm = python_worker_cpu(jvm_pid), _process_cpu(jvm_pid)
            df = embed_texts_df(source, info=info, encoder_dir=None, batch_size=args.batch_size, partitions=tasks)
            seconds, _ = timed(lambda: df.write.format("noop").mode("overwrite").save())
            return seconds, cpu_delta(cpu, python_worker_cpu(jvm_pid)), _process_cpu(jvm_pid) - jvm

        results["worker_threads"] = worker_threads(spark)
        cold = {"udf_2tasks": udf(2)}  # starts both workers and loads the model in each
        runs: dict[str, list] = {"bare_1thread": [], "udf_1task": [], "udf_2tasks": []}
        for _ in range(args.repeats):
            runs["bare_1thread"].append(bare())
            runs["udf_1task"].append(udf(1))
            runs["udf_2tasks"].append(udf(2))
        cores = {"bare_1thread": 1, "udf_1task": 1, "udf_2tasks": 2}
        variants = {}
        for name, measured in runs.items():
            seconds, cpu, jvm = min(measured, key=lambda m: m[0])
            variants[name] = {"seconds": round(seconds, 2), "texts_per_s": round(args.texts / seconds, 1),
                              "cores": cores[name], "texts_per_s_per_core": round(args.texts / seconds / cores[name], 1),
                              "python_cpu_seconds": round(cpu, 2),
                              "texts_per_cpu_s": round(args.texts / cpu, 1) if cpu else None,
                              "jvm_cpu_seconds": None if jvm is None else round(jvm, 2),
                              "all_seconds": [round(m[0], 2) for m in measured]}
        variants["udf_2tasks_cold"] = {"seconds": round(cold["udf_2tasks"][0], 2),
                                       "texts_per_s": round(args.texts / cold["udf_2tasks"][0], 1)}
        results["variants"] = variants
        bare_rate = variants["bare_1thread"]
        results["ratios"] = {
            "udf_1task_vs_bare_per_core": round(variants["udf_1task"]["texts_per_s_per_core"]
                                                / bare_rate["texts_per_s_per_core"], 3),
            "udf_2tasks_vs_bare_per_core": round(variants["udf_2tasks"]["texts_per_s_per_core"]
                                                 / bare_rate["texts_per_s_per_core"], 3),
            "udf_1task_vs_bare_per_cpu_s": round(variants["udf_1task"]["texts_per_cpu_s"]
                                                 / bare_rate["texts_per_cpu_s"], 3),
            "udf_2tasks_vs_bare_per_cpu_s": round(variants["udf_2tasks"]["texts_per_cpu_s"]
                                                  / bare_rate["texts_per_cpu_s"], 3),
        }
        results["machine"]["load_avg_end"] = os.getloadavg()
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_results(results, args.out)


if __name__ == "__main__":
    main()
