"""spark-submit / Databricks entry point for `ulv-spark segment` (arguments as for the CLI)."""
import sys

from ulv_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
