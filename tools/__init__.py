"""Developer tooling, not installed with the package: ``python -m tools.<name>`` from the repo root.

* ``demo``: what ``make demo`` runs (generate, the nightly with the backtest, a summary);
* ``cluster``: a Spark standalone cluster on loopback (start / stop / fault drills);
* ``confdoc``: the conf reference table of README, generated from ``ulv_spark/config/sections.py``.
"""
