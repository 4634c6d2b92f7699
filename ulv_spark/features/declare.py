"""Feature declarations: each tabular feature once (name, comment, default, source), beside its expression.

The modules that compute features (``rfm``, ``behaviour``, ``build``) declare their columns in
``block(...)`` groups next to the functions that produce them; ``build.FEATURE_BLOCKS`` lists
the blocks in table order, and the ``user_features`` / ``training_examples`` contracts
(``catalog``) are generated from it. Rules the builder enforces:

* ``default`` is the value of a user who has no rows in the part that computes the feature
  (no purchases, no events, no exposures, no attributes row): the documented "0 without ...";
* a feature whose ``source`` input is absent (no events table at all) is its default;
* a feature whose source is present but that no builder produces is an error;
* a null a builder does produce for a user who has rows is kept, so the nightly null-feature
  gate sees it.

A block may expand over a conf list (``per``): ``"window"`` over ``features.windows_days``
(``{w}``), ``"trend_pair"`` over consecutive windows (``{a}``, ``{b}``), ``"event_type"`` over
``features.event_types`` (``{type}``, ``{type_slug}``), ``"text_dim"`` over the
``features.text_dims`` projected text dimensions (``{i}``). Blocks from a text source are left
out entirely with ``features.text: false``. Comments may name conf values as ``{cfg.<key>}``.
No Spark here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ulv_spark.schemas import Col

# Inputs a feature summarises (the bronze tables of the same names; the text sources are the
# product embeddings of the bought / viewed products and the review embeddings).
ORDERS, EVENTS, EXPOSURES, ATTRIBUTES = "orders", "events", "campaign_exposures", "user_attributes"
PRODUCT_TEXT, REVIEW_TEXT = "product_text", "review_text"
TEXT_SOURCES = (PRODUCT_TEXT, REVIEW_TEXT)   # left out of the tables with features.text: false
SOURCES = (ORDERS, EVENTS, EXPOSURES, ATTRIBUTES) + TEXT_SOURCES
PER = ("window", "trend_pair", "event_type", "text_dim")

ATTRIBUTE_PREFIX = "attr_"           # joined user attributes: attr_<name> DOUBLE


def slug(name: str) -> str:
    """`name` as a lower-case column-name fragment: runs of other characters become '_'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "x"


def trend_pairs(windows_days) -> list[tuple[int, int]]:
    """Consecutive window pairs (short, long) that get a trend-ratio column."""
    windows = list(windows_days)
    return list(zip(windows, windows[1:]))


@dataclass(frozen=True)
class Feature:
    """One tabular feature column (DOUBLE); `name` and `comment` may be templates (see module doc)."""

    name: str
    comment: str
    default: float = 0.0


@dataclass(frozen=True)
class Declared:
    """A feature resolved for one conf: concrete name and comment, its default and source."""

    name: str
    comment: str
    default: float
    source: str

    def column(self) -> Col:
        return Col(self.name, "DOUBLE", True, self.comment)


@dataclass(frozen=True)
class Block:
    """Features declared together (in table order), from one source, optionally once per conf value."""

    features: tuple[Feature, ...]
    source: str = ORDERS
    per: Optional[str] = None

    def values(self, features_cfg) -> list:
        """The conf values the block expands over ([None] when it does not)."""
        if self.per is None:
            return [None]
        if self.per == "window":
            return list(features_cfg.windows_days)
        if self.per == "trend_pair":
            return trend_pairs(features_cfg.windows_days)
        if self.per == "text_dim":
            return list(range(features_cfg.text_dims))
        return list(features_cfg.event_types)

    def _vars(self, value) -> dict[str, Any]:
        if self.per == "window":
            return {"w": value}
        if self.per == "trend_pair":
            return {"a": value[0], "b": value[1]}
        if self.per == "event_type":
            return {"type": str(value).strip().lower(), "type_slug": slug(value)}
        if self.per == "text_dim":
            return {"i": value}
        return {}

    def names(self, value=None) -> tuple[str, ...]:
        """Column names of the block for one conf value (a window, a trend pair, an event type)."""
        return tuple(f.name.format(**self._vars(value)) for f in self.features)

    def enabled(self, features_cfg) -> bool:
        """False for a text block when features.text is off (its columns are not in the tables)."""
        return self.source not in TEXT_SOURCES or bool(getattr(features_cfg, "text", True))

    def expand(self, features_cfg) -> Iterator[Declared]:
        if not self.enabled(features_cfg):
            return
        for value in self.values(features_cfg):
            variables = {**self._vars(value), "cfg": features_cfg}
            for f in self.features:
                yield Declared(f.name.format(**variables), f.comment.format(**variables), f.default, self.source)


def block(*features: Feature, source: str = ORDERS, per: Optional[str] = None) -> Block:
    """Declare `features` (in table order) as computed from `source`, once per `per` value of the conf."""
    if source not in SOURCES:
        raise ValueError(f"unknown feature source {source!r}; sources: {', '.join(SOURCES)}")
    if per is not None and per not in PER:
        raise ValueError(f"unknown block expansion {per!r}; one of {', '.join(PER)}")
    return Block(tuple(features), source, per)


def expand(blocks, features_cfg) -> tuple[Declared, ...]:
    """Every declared feature of `blocks` for `features_cfg`, in table order; names must be unique."""
    declared = tuple(d for b in blocks for d in b.expand(features_cfg))
    names = [d.name for d in declared]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"feature(s) {repeated} declared more than once")
    return declared
