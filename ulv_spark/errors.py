"""The errors a stage raises on purpose; the CLI maps them to exit codes (1 failed, 2 usage).

Library code raises these and never imports the CLI.
"""
from __future__ import annotations

from ulv_spark.config import ConfigError

__all__ = ["ConfigError", "JobFailed", "GateFailed", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_USAGE = 2    # bad arguments or conf
EXIT_FAILED = 1   # the job ran and failed (a gate, a reject threshold, an error)


class JobFailed(RuntimeError):
    """A job stopped on purpose (gate, threshold, bad input): message for the user, exit 1."""


class GateFailed(JobFailed):
    """A quality gate stopped the night."""
