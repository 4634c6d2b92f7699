"""README's learned-segment SQL examples, run through spark.sql on tiny Delta tables of the real contracts."""
import datetime as dt
import re
from pathlib import Path

from ulv_spark import catalog, lake

REPO = Path(__file__).resolve().parents[2]
D0, D = dt.date(2025, 9, 30), dt.date(2025, 10, 1)


def _statements() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learned segments", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith("--")]
    return [s.strip() for s in " ".join(lines).split(";") if s.strip()]


def _write(spark, lakehouse, contract, rows):
    ref = lake.table_ref(lakehouse, contract.name)
    df = spark.createDataFrame(rows, contract.ddl())
    for as_of in sorted({r[contract.column_names.index("as_of_date")] for r in rows}):
        lake.write_partition(spark, df.where(df.as_of_date == as_of), ref, contract, as_of=as_of)
    lake.create_latest_view(spark, ref)


def test_readme_segment_sql_examples_answer_on_tiny_tables(spark, lakehouse):
    # 12 users tonight: segment 0 = u01..u04 (value 100..400), 1 = u05..u08 (10..40), 2 = u09..u12 (50)
    seg = {f"u{i:02d}": 0 if i <= 4 else 1 if i <= 8 else 2 for i in range(1, 13)}
    value = {f"u{i:02d}": 100.0 * i if i <= 4 else 10.0 * (i - 4) if i <= 8 else 50.0 for i in range(1, 13)}
    names = {0: "high value, loyal", 1: "low value, at risk", 2: "mid value, wavering"}
    grid = {0: "champion", 1: "lost", 2: "promising"}
    _write(spark, lakehouse, catalog.USER_SEGMENTS,
           [(u, d, grid[s], "high", "low", s, names[s], "m", "r") for u, s in seg.items() for d in (D0, D)])
    _write(spark, lakehouse, catalog.USER_VALUE,
           [(u, d, 90, v, 0.5, 0.0, 2 * v, 1, "m", "r") for u, v in value.items() for d in (D0, D)])
    _write(spark, lakehouse, catalog.SEGMENT_TRANSITIONS,
           [(D, D0, 0, 0, 4, "m", "r"), (D, D0, 1, 1, 3, "m", "r"), (D, D0, 1, 2, 1, "m", "r"),
            (D, D0, None, 2, 2, "m", "r"), (D, D0, 2, None, 1, "m", "r")])
    _write(spark, lakehouse, catalog.SEGMENT_PROFILES,
           [(D, s, names[s], 4, 1 / 3, m, 4 * m, c, {"coupon_10": u}, None, None, None, None, None, None, "m", "r")
            for s, m, c, u in ((0, 250.0, 0.15, 3.0), (1, 25.0, 0.75, -1.0), (2, 50.0, 0.4, 0.5))])
    statements = [re.sub(r"\bulv\.", f"{lakehouse.schema}.", s) for s in _statements()]
    assert len(statements) == 4
    by_value, by_grid, moves, profiles = (spark.sql(s).collect() for s in statements)
    assert [tuple(r) for r in by_value] == [(0, "high value, loyal", 4, 250.0), (2, "mid value, wavering", 4, 50.0),
                                           (1, "low value, at risk", 4, 25.0)]
    assert [tuple(r) for r in by_grid] == [("champion", "high value, loyal", 4), ("lost", "low value, at risk", 4),
                                          ("promising", "mid value, wavering", 4)]
    assert [tuple(r) for r in moves] == [(None, 2, 2), (1, 2, 1), (2, None, 1)]
    assert [(r["learned_segment"], r["share"], r["coupon_10_uplift"]) for r in profiles] == [
        (0, 0.333, 3.0), (1, 0.333, -1.0), (2, 0.333, 0.5)]
