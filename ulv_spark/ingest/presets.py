"""Dataset presets: known public order logs that ingest can read with `format: preset`.

``cdnow``: the CDNOW master order log shipped inside the ``lifetimes`` wheel
(``lifetimes/datasets/CDNOW_master.txt``): 69,659 purchases of 23,570 customers,
1997-01-01 .. 1998-06-30, whitespace separated with a header ``customer_id date
number_of_cds dollar_value``. It has no order id and rows are not unique on (customer, date),
so the preset derives one per row. Nothing is downloaded: the file is located with importlib.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Preset:
    """How to read one preset: a text file split on whitespace, and its default source settings."""

    name: str
    tables: tuple[str, ...]             # source tables the preset can provide
    default_path: Callable[[], str]
    parse: Callable[[DataFrame], DataFrame]  # spark.read.text(path) -> named string columns
    columns: dict                       # contract field -> column of the parsed frame
    timestamp_format: str
    derive_order_id: bool = False


def cdnow_path() -> str:
    """Path of CDNOW_master.txt inside the installed lifetimes package."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the cdnow preset needs the 'lifetimes' package (pip install lifetimes==0.11.3)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "CDNOW_master.txt"
    if not path.is_file():
        raise FileNotFoundError(f"CDNOW_master.txt not found in the lifetimes package at {path}")
    return str(path)


CDNOW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def parse_whitespace_table(lines: DataFrame, names: tuple[str, ...]) -> DataFrame:
    """Split text lines on runs of whitespace into string columns `names`; drop blanks and the header.

    Grain: one row per data line. Values stay text (ids keep leading zeros); fields beyond
    `names` are ignored, missing ones are null.
    """
    text = F.trim(F.regexp_replace(F.col("value"), r"[\r\n]", ""))
    parts = F.split(text, r"\s+")
    data = lines.select(text.alias("line"), parts.alias("parts")).filter(
        (F.col("line") != "") & ~F.col("line").startswith(names[0]))
    return data.select(*[F.get(F.col("parts"), i).alias(name) for i, name in enumerate(names)])


PRESETS = {
    "cdnow": Preset(
        name="cdnow", tables=("orders",), default_path=cdnow_path,
        parse=lambda lines: parse_whitespace_table(lines, CDNOW_COLUMNS),
        columns={"user_id": "customer_id", "order_ts": "date", "amount": "dollar_value", "quantity": "number_of_cds"},
        timestamp_format="yyyyMMdd", derive_order_id=True),
}


def resolve(table: str, src) -> tuple[Preset, object]:
    """The preset named by `src.preset` and `src` with the preset's defaults filled in.

    The source's own settings win: its columns are laid over the preset's, and its
    timestamp_format / path replace the preset's when set.

    Raises:
        ValueError: unknown preset, or a preset that does not provide `table`.
    """
    preset = PRESETS.get(src.preset or "")
    if preset is None:
        raise ValueError(f"sources.{table}: unknown preset {src.preset!r} (known: {', '.join(sorted(PRESETS))})")
    if table not in preset.tables:
        raise ValueError(f"sources.{table}: preset {preset.name!r} provides only {list(preset.tables)}")
    effective = dataclasses.replace(
        src, path=src.path or preset.default_path(), columns={**preset.columns, **src.columns},
        timestamp_format=src.timestamp_format or preset.timestamp_format,
        derive_order_id=src.derive_order_id or preset.derive_order_id)
    return preset, effective
