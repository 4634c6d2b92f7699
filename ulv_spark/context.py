"""What every stage function receives: the conf, the run date, the run id and a lazy session."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ulv_spark.config import Config

Summary = dict[str, Any]  # a stage's JSON-serialisable result (printed by the CLI, kept by the nightly)


@dataclass
class JobContext:
    cfg: Config
    as_of: dt.date
    run_id: str
    command: str
    _spark: object = field(default=None, repr=False)

    @property
    def spark(self):
        if self._spark is None:
            from ulv_spark.spark import get_spark

            self._spark = get_spark(self.cfg.spark, self.cfg.lakehouse)
        return self._spark
