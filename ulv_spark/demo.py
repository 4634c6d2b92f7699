"""`make demo`: run the pipeline end to end on the embedded default and say where the tables are."""
from __future__ import annotations

import argparse
import sys

from ulv_spark.cli import available_commands, main as cli_main

# The demo chain, in order; steps whose command is not part of this build are skipped.
DEMO_STEPS = (
    ("generate", []),
    ("nightly", []),
    ("tables", []),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ulv_spark.demo")
    parser.add_argument("--conf", default="conf/local.yaml")
    args = parser.parse_args(argv)
    commands = available_commands()
    for name, extra in DEMO_STEPS:
        if name not in commands:
            print(f"demo: '{name}' is not part of this build yet; skipped", file=sys.stderr)
            continue
        print(f"\n=== ulv-spark {name} ===", file=sys.stderr)
        code = cli_main([name, "--conf", args.conf, *extra])
        if code != 0:
            print(f"demo: '{name}' failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
