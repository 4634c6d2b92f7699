"""Text normalisation and hashing, defined once in Python and once as Spark Columns that agree.

The embed job hashes texts in Spark SQL (so the incremental anti-join runs without Python), and
the encoder embeds them in Python; both must see the same text. The rule, in both:

1. bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD (Spark:
   ``make_valid_utf8``, which also repairs STRING values that hold invalid bytes);
2. every run of whitespace (the Unicode White_Space set) and of control characters (C0 except
   the whitespace ones, and DEL) becomes one space; lone surrogates (Python only) become U+FFFD;
3. leading and trailing spaces are removed.

Case, accents and Unicode composition are left alone: the tokenizer decides (an uncased model
lowercases and strips accents itself, a cased one must not be fed lowercased text). A text that
is missing or empty after these steps has no text (``has_text`` false).

``text_hash`` is the hex SHA-256 of the UTF-8 bytes of the normalised text; ``text_hash_col``
computes the same value with Spark's ``sha2``. Tests check the two agree on awkward inputs.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Optional, Union

# Unicode White_Space (every code point with the property) plus C0 controls and DEL. The
# escapes are read the same way by Python's re and Java's regex, so one pattern serves both.
SEPARATOR_CLASS = (r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
                   r"\x00-\x08\x0e-\x1f\x7f]+")
_SEPARATORS = re.compile(SEPARATOR_CLASS)
_SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"

TextLike = Union[str, bytes, bytearray, None, float]


def normalise_text(text: TextLike) -> str:
    """The normalised text ('' when missing): decoded, separators collapsed to one space, stripped.

    Args:
        text: a str, UTF-8 bytes (invalid sequences become U+FFFD), None, or NaN (pandas' missing).
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        raise TypeError(f"a text must be str, bytes or None, got {type(text).__name__}")
    text = _SURROGATES.sub(REPLACEMENT, text)
    return _SEPARATORS.sub(" ", text).strip(" ")


def text_hash(text: TextLike) -> str:
    """Hex SHA-256 of the normalised text's UTF-8 bytes (stable across runs, machines and Spark)."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


# ---- the same rules as Spark Columns ----------------------------------------------------------
def normalised_text_col(col):
    """Spark Column: the normalised text of STRING (or BINARY) column ``col``; '' when null.

    Args:
        col: a column name or Column.
    """
    from pyspark.sql import functions as F

    c = F.col(col) if isinstance(col, str) else col
    valid = F.make_valid_utf8(c.cast("string"))
    return F.trim(F.regexp_replace(F.coalesce(valid, F.lit("")), F.lit(SEPARATOR_CLASS), F.lit(" ")))


def text_hash_col(normalised):
    """Spark Column: ``text_hash`` of an already normalised STRING column (see :func:`normalised_text_col`)."""
    from pyspark.sql import functions as F

    c = F.col(normalised) if isinstance(normalised, str) else normalised
    return F.sha2(c, 256)


def join_parts(*parts: Optional[str], sep: str = ". ") -> str:
    """Non-empty normalised parts joined by ``sep`` (a product's title and description)."""
    kept = [p for p in (normalise_text(x) for x in parts) if p]
    return sep.join(kept)
