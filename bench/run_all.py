"""`make bench`: run every benchmark with its default sizes; results land in bench/results/.

    python -m bench.run_all [--only features,score]

Each benchmark also runs on its own (`python -m bench.bench_<area> --help` for sizes).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHES = ("generate", "ingest", "features", "duckdb", "train", "score", "embed", "evaluate", "cluster")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help="comma separated subset of " + ", ".join(BENCHES))
    args = parser.parse_args(argv)
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}")
        start = time.perf_counter()
        print(f"\n=== bench.bench_{name} ===", flush=True)
        try:
            importlib.import_module(f"bench.bench_{name}").main([])
        except SystemExit as exc:  # argparse-style exits inside a benchmark
            if exc.code not in (0, None):
                failed.append(name)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other benchmarks
            print(f"bench_{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
        print(f"=== bench.bench_{name}: {time.perf_counter() - start:.0f}s ===", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
