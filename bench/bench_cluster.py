"""The same nightly job on local[2] and on a 2-worker standalone cluster: wall time per stage.

Data: `ulv-spark generate` with the demo conf (conf/local.yaml; --users overrides the size),
generated once (not timed) and copied, so both runs start from identical raw files and an
empty lakehouse. Then, one after the other on the same machine:

* ``local[2]``: ``ulv-spark nightly --conf <local conf>``: one JVM with 2 task threads, training
  in TorchDistributor local mode (2 processes on the driver);
* ``cluster``: ``python -m tools.cluster start --workers 2 --cores 1`` and README's
  ``spark-submit --master spark://... --packages <delta> --py-files <wheel> jobs/nightly.py``
  with conf/standalone.yaml: a driver JVM, a master, 2 worker JVMs and 2 executor JVMs with
  1 core each; training in barrier mode with one rank per executor.

Stage seconds are the ones the nightly summary prints; ``process`` is the whole command's
wall time (JVM start, Delta jar resolution, the summary). Both runs train the model (no model
exists yet), with the same training conf. On a 2-core machine the cluster has the same two
cores as local[2] and adds JVMs and network hops, so this measures the cost of going
distributed, not a speed-up: the cluster pays off when its workers are separate machines.

Run: ``.venv/bin/python -m bench.bench_cluster [--users 20000]``. Prints and writes
``bench/results/cluster.json`` and ``bench/results/cluster.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
STAGES = ("ingest", "features", "train", "score")


def _summary(stdout: str) -> dict:
    text = "\n" + stdout
    start = text.rfind("\n{\n")
    if start < 0:
        raise RuntimeError("the command printed no JSON summary")
    return json.loads(text[start:])


def _run(command: list[str], cwd: Path, log: Path, env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
    seconds = time.perf_counter() - t0
    out = proc.stdout.decode()
    (log.with_suffix(".out")).write_text(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {proc.returncode}; see {log}")
    return seconds, _summary(out)


def _conf(root: Path, base: str, users: int, master: str | None = None) -> Path:
    conf = root / "conf.yaml"
    spark = f'spark: {{master: "{master}"}}\n' if master else ""
    conf.write_text(f"extends: {REPO / 'conf' / base}\n{spark}"
                    f"lakehouse: {{root: {root / 'lakehouse'}, schema: bench_{root.name}}}\n"
                    f"generate: {{users: {users}}}\n")
    return conf


def _row(name: str, process: float, summary: dict) -> dict:
    stages = {s["stage"]: s["seconds"] for s in summary["stages"]}
    train = next(s for s in summary["stages"] if s["stage"] == "train")
    return {"setup": name, "process_seconds": round(process, 1), "nightly_seconds": summary["seconds"],
            "stages": stages, "trained": train.get("trained"), "world_size": train.get("world_size"),
            "status": summary["status"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--as-of", default="2025-10-01")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)

    from tools import cluster

    scratch = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    env = cluster.submit_env()
    env["PYSPARK_PYTHON"] = sys.executable
    rows, load_before = [], os.getloadavg()
    state_dir = scratch / "cluster"
    try:
        local_root, cluster_root = scratch / "local", scratch / "cluster_run"
        local_root.mkdir()
        cluster_root.mkdir()
        local_conf = _conf(local_root, "local.yaml", args.users)
        print(f"generating {args.users} users (not timed) ...", flush=True)
        _run([str(BIN / "ulv-spark"), "generate", "--conf", str(local_conf), "--as-of", args.as_of],
             local_root, local_root / "generate.log", env)
        shutil.copytree(local_root / "lakehouse" / "raw", cluster_root / "lakehouse" / "raw")

        print("nightly on local[2] ...", flush=True)
        seconds, summary = _run([str(BIN / "ulv-spark"), "nightly", "--conf", str(local_conf), "--as-of", args.as_of],
                                local_root, local_root / "nightly.log", env)
        rows.append(_row("local[2]", seconds, summary))
        print(json.dumps(rows[-1]), flush=True)

        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(scratch / "dist"), str(REPO)], check=True, cwd=scratch)
        wheel = next((scratch / "dist").glob("ulv_spark-*.whl"))
        state = cluster.start(workers=2, cores=1, memory="3g", state_dir=str(state_dir), port=cluster._free_port())
        cluster_conf = _conf(cluster_root, "standalone.yaml", args.users, master=state.master_url)
        submit = cluster.submit_command(state.master_url, str(wheel), str(REPO / "jobs" / "nightly.py"),
                                        ["--conf", str(cluster_conf), "--as-of", args.as_of])
        print("nightly on the 2-worker cluster (spark-submit) ...", flush=True)
        seconds, summary = _run(submit, cluster_root, cluster_root / "nightly.log", env)
        rows.append(_row("standalone, 2 workers x 1 core", seconds, summary))
        print(json.dumps(rows[-1]), flush=True)
    finally:
        cluster.stop(str(state_dir))
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    result = {"benchmark": "bench_cluster", "command": f"python -m bench.bench_cluster --users {args.users}",
              "users": args.users, "as_of": args.as_of, "machine": {"cpus": os.cpu_count(),
              "python": platform.python_version(), "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()]}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "cluster.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["## Nightly job: local[2] vs a 2-worker standalone cluster (issue 9)", "",
             f"`{result['command']}` (`bench/bench_cluster.py`): the same nightly (generated shop, "
             f"{result['users']:,} users, run date {result['as_of']}, model trained in both runs) on one "
             f"{result['machine']['cpus']}-core machine, load {result['machine']['load_before'][0]} before, "
             f"{result['machine']['load_after'][0]} after. Wall seconds:", "",
             "| stage | " + " | ".join(r["setup"] for r in rows) + " | cluster / local |",
             "|---|" + "---:|" * (len(rows) + 1)]
    for stage in (*STAGES, "nightly total", "whole command"):
        values = [r["nightly_seconds"] if stage == "nightly total" else
                  r["process_seconds"] if stage == "whole command" else r["stages"].get(stage) for r in rows]
        ratio = f"{values[1] / values[0]:.2f}" if len(values) == 2 and values[0] and values[1] else ""
        lines.append(f"| {stage} | " + " | ".join(f"{v:.1f}" if v is not None else "" for v in values)
                     + f" | {ratio} |")
    lines.append("")
    lines.append("Training processes: " + ", ".join(f"{r['setup']} {r['world_size']}" for r in rows)
                 + " (local mode on the driver vs barrier mode, one rank per executor).")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
