"""Entry point for `ulv-spark sql-server start|stop|status` (arguments as for the CLI).

Not a spark-submit job: the server runs in its own detached process; this file only mirrors the
command so every command has a job file.
"""
import sys

from ulv_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["sql-server", *sys.argv[1:]]))
