"""Text normalisation and hashing: exact values, and Spark SQL agreeing with Python on awkward input."""
import pytest
from pyspark.sql import functions as F

from ulv_spark.text.normalise import join_parts, normalise_text, normalised_text_col, text_hash, text_hash_col

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

AWKWARD_STRINGS = [
    "  Red\tRunning\n\nShoes  ", "a\x00b\x1fc\x7fd", "a\u00a0\u2003\u3000b", "\u200bzero width stays",
    "e\u0301 caf\u00e9 (composition untouched)", "\x85x\u2028y\u2029", "", "   ", "tab\x0b\x0cend",
    "Emoji \U0001f45f shoes", "CASE Is Kept",
]
INVALID_UTF8 = [b"caf\xe9 cr\xe8me", b"\xff\xfe", b"ok \xe2\x82 x", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xc0\xaf",
                b"\xf4\x90\x80\x80", b"a\xe2\x82\xacb"]


@pytest.mark.parametrize("raw, expected", [
    ("  Red\tRunning\n\nShoes  ", "Red Running Shoes"),
    ("a\x00b\x1fc\x7fd", "a b c d"),
    ("a\u00a0\u2003\u3000b", "a b"),
    ("caf\u00e9", "caf\u00e9"),
    ("CASE Is Kept", "CASE Is Kept"),
    (b"caf\xe9 cr\xe8me", "caf\ufffd cr\ufffdme"),
    (b"a\xe2\x82\xacb", "a\u20acb"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    (None, ""),
    (float("nan"), ""),
    ("", ""),
    (" \t\n ", ""),
])
def test_normalise_text_collapses_separators_decodes_bytes_and_maps_missing_to_empty(raw, expected):
    assert normalise_text(raw) == expected


def test_normalise_text_rejects_other_types():
    with pytest.raises(TypeError, match="str, bytes or None"):
        normalise_text(3)


def test_text_hash_is_sha256_of_the_normalised_text_and_pinned():
    assert text_hash("red running shoes") == "6f9dbcfd23afb533c6560434b60e2a3dff8b2cfa3e896657cb6815b96772b41c"
    assert text_hash("  red \n running\tshoes ") == text_hash("red running shoes")
    assert text_hash("Red Running Shoes") == "7213a4e8e098d1a4b671765fb586b8f3792b9730064cdd9af0dabdf5c5b4f084"
    assert text_hash(None) == text_hash("") == text_hash("  ") == EMPTY_SHA256
    assert text_hash(b"caf\xe9") == text_hash("caf\ufffd")


def test_join_parts_skips_missing_and_empty_parts():
    assert join_parts(" Trail  shoe ", "Grippy sole.\n") == "Trail shoe. Grippy sole."
    assert join_parts(None, " Only a description ") == "Only a description"
    assert join_parts("Only a title", "  ") == "Only a title"
    assert join_parts(None, float("nan")) == ""


def test_spark_normalisation_and_hash_equal_python_on_awkward_and_invalid_utf8_input(spark):
    """The job hashes in Spark SQL and embeds in Python: both must see the same text."""
    rows = [(None, s) for s in AWKWARD_STRINGS] + [(b, None) for b in INVALID_UTF8] + [(None, None)]
    df = spark.createDataFrame(rows, "b binary, s string")
    # A binary column cast to string keeps invalid bytes inside a STRING value, as raw CSV/text reads can.
    text = F.coalesce(F.col("s"), F.col("b").cast("string"))
    got = (df.select("b", "s", normalised_text_col(text).alias("n"))
           .select("b", "s", "n", text_hash_col("n").alias("h")).collect())
    assert len(got) == len(rows)
    for row in got:
        raw = bytes(row["b"]) if row["b"] is not None else row["s"]
        assert (row["n"], row["h"]) == (normalise_text(raw), text_hash(raw)), repr(raw)
