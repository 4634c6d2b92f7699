"""Table upkeep the segments work needs and lake.py does not (yet) offer: new nullable columns, the comment.

``add_missing_columns`` lets a lakehouse written before the learned-segment columns
(user_segments.learned_segment*, score_predictions.embedding) take them: Delta adds nullable
columns in place (ALTER TABLE ... ADD COLUMNS, metadata only). Candidates for lake.py once the
lake owner agrees.
"""
from __future__ import annotations


def _quote(name: str) -> str:
    return ".".join(f"`{part}`" for part in name.split("."))


def add_missing_columns(spark, ref, contract) -> list[str]:
    """Add the contract's nullable columns the existing table lacks; returns their names (none: no-op)."""
    from ulv_spark import lake

    if not lake.is_delta(spark, ref):
        return []
    present = set(lake.ensure_table(spark, ref, contract).toDF().columns)
    missing = [c for c in contract.columns if c.name not in present]
    not_null = [c.name for c in missing if not c.nullable]
    if not_null:
        raise ValueError(f"{contract.name}: existing table lacks required column(s) {not_null}; "
                         f"rebuild it (only nullable columns are added in place)")
    if missing:
        cols = ", ".join(f"`{c.name}` {c.type} COMMENT '{c.comment.replace(chr(39), '')}'" for c in missing)
        spark.sql(f"ALTER TABLE {_quote(ref.name)} ADD COLUMNS ({cols})")
    return [c.name for c in missing]


def set_table_comment(spark, ref, comment: str) -> None:
    """Replace the table comment (e.g. user_embeddings' dimension of the model last written)."""
    text = comment.replace("'", "")
    spark.sql(f"ALTER TABLE {_quote(ref.name)} SET TBLPROPERTIES ('comment' = '{text}')")
