"""spark-submit / Databricks entry point for `ulv-spark generate` (arguments as for the CLI)."""
import sys

from ulv_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
