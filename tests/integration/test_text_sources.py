"""Text sources in `ingest` on real Spark + Delta: products / reviews with their rejects, and an
invoice-line log with product texts and no catalog, whose product embeddings come from its lines."""
import datetime as dt
import json

import numpy as np
import pytest
from chispa import assert_df_equality

from ulv_spark import lake
from ulv_spark.config import load_config
from ulv_spark.context import JobContext
from ulv_spark.ingest import job
from ulv_spark.text.encoder import embed_texts
from ulv_spark.text.job import run_embed

pytestmark = pytest.mark.slow

# A hand-written invoice-line log: lines carry the product id and its description; no catalog.
# P2's text changes between its lines (the latest wins); P3's line has no text; line 5 has a
# non-UTF-8 description (decoded by Spark's CSV reader to U+FFFD), A-4 is a cancellation.
INVOICE_CSV = (
    "invoice,cust,ts,sku,descr,qty,price\n"
    "A-1,c1,2025-03-01 10:00:00,P1,Red leather handbag,1,80.0\n"
    "A-1,c1,2025-03-01 10:00:00,P2,Steel saucepan,2,15.0\n"
    "A-2,c2,2025-03-02 11:00:00,P2,Stainless steel saucepan 2 litres,1,16.0\n"
    "A-3,c2,2025-03-03 12:00:00,P3,,3,2.5\n"
).encode() + b"A-3,c2,2025-03-03 12:00:00,P4,Caf\xe9 cr\xe8me mug,1,9.0\n" + (
    "C-4,c1,2025-03-04 09:00:00,P1,Red leather handbag,-1,80.0\n"
).encode()
INVOICE_MAPPING = ("  orders:\n    format: csv\n    path: {path}\n    line_level: true\n    return_id_prefix: C\n"
                   "    columns: {{user_id: cust, order_id: invoice, order_ts: ts, product_id: sku,\n"
                   "              product_description: descr, quantity: qty, unit_price: price}}\n")


def _conf(write_conf, lakehouse, sources: str):
    return load_config(write_conf(f"lakehouse:\n  root: {lakehouse.root}\n  schema: {lakehouse.schema}\n"
                                  f"  shared_dir: {lakehouse.shared_dir}\nspark:\n  shuffle_partitions: 2\n"
                                  f"sources:\n{sources}"))


def _ctx(cfg, command, run_id="r1", as_of=dt.date(2025, 4, 1)):
    return JobContext(cfg=cfg, as_of=as_of, run_id=run_id, command=command)


def _table(spark, lakehouse, name):
    return lake.read_table(spark, lake.table_ref(lakehouse, name))


def test_invoice_lines_with_product_texts_and_no_catalog_get_product_embeddings(spark, lakehouse, write_conf,
                                                                                  tmp_path):
    path = tmp_path / "invoices.csv"
    path.write_bytes(INVOICE_CSV)
    cfg = _conf(write_conf, lakehouse, INVOICE_MAPPING.format(path=path))
    summary = job.run_ingest(_ctx(cfg, "ingest"))
    assert summary["tables"]["orders"]["rejected"] == 0
    assert summary["tables"]["order_lines"]["derived_from"] == "orders"
    assert summary["tables"]["products"]["inserted"] == 4

    lines = _table(spark, lakehouse, "order_lines").collect()
    ts = dt.datetime
    # line numbers follow a hash of the source row: check them as a set per order, the rest by product
    got = {(r["order_id"], r["product_id"]): (r["user_id"], r["order_ts"], r["quantity"], r["amount"])
           for r in lines}
    assert got == {("A-1", "P1"): ("c1", ts(2025, 3, 1, 10), 1.0, 80.0),
                   ("A-1", "P2"): ("c1", ts(2025, 3, 1, 10), 2.0, 30.0),
                   ("A-2", "P2"): ("c2", ts(2025, 3, 2, 11), 1.0, 16.0),
                   ("A-3", "P3"): ("c2", ts(2025, 3, 3, 12), 3.0, 7.5),
                   ("A-3", "P4"): ("c2", ts(2025, 3, 3, 12), 1.0, 9.0),
                   ("C-4", "P1"): ("c1", ts(2025, 3, 4, 9), -1.0, -80.0)}
    assert sorted((r["order_id"], r["line_id"]) for r in lines) == [
        ("A-1", "1"), ("A-1", "2"), ("A-2", "1"), ("A-3", "1"), ("A-3", "2"), ("C-4", "1")]

    products = _table(spark, lakehouse, "products").drop("run_id")
    bad = "Caf\ufffd cr\ufffdme mug"
    expected = spark.createDataFrame([
        ("P1", None, "Red leather handbag", None, 80.0),      # the latest line is the return: same text
        ("P2", None, "Stainless steel saucepan 2 litres", None, 16.0),
        ("P3", None, None, None, 2.5),                        # no text: kept, embedded as zeros
        ("P4", None, bad, None, 9.0),
    ], products.schema)
    assert_df_equality(products, expected, ignore_row_order=True, ignore_nullable=True)

    embedded = run_embed(_ctx(cfg, "embed"))
    assert embedded["tables"]["product_embeddings"]["rows_written"] == 4
    vectors = {r["product_id"]: (r["has_text"], np.array(r["embedding"]))
               for r in _table(spark, lakehouse, "product_embeddings").collect()}
    reference = embed_texts(["Red leather handbag", "Stainless steel saucepan 2 litres"])
    np.testing.assert_allclose(vectors["P1"][1], reference[0], atol=1e-5)
    np.testing.assert_allclose(vectors["P2"][1], reference[1], atol=1e-5)
    assert vectors["P3"][0] is False and not vectors["P3"][1].any()
    assert vectors["P4"][0] is True

    again = job.run_ingest(_ctx(cfg, "ingest", run_id="r2"))  # the same file again: nothing changes
    assert {t: (again["tables"][t]["inserted"], again["tables"][t]["updated"])
            for t in ("orders", "order_lines", "products")} == {t: (0, 0) for t in ("orders", "order_lines",
                                                                                      "products")}
    assert run_embed(_ctx(cfg, "embed", run_id="r2"))["tables"]["product_embeddings"]["rows_written"] == 0


PRODUCTS_CSV = ("sku,name,blurb,cat,list_price\n"
                "P1,Red leather handbag,Soft Italian leather,bags,80\n"
                "P2,,,kitchen,15\n"                       # no text at all: kept
                ",Nameless,,misc,1\n"                      # null_product_id
                "P3,Mug,,kitchen,cheap\n"                  # bad_price
                "P4,Mug,,kitchen,-2\n"                     # bad_price (negative)
                "P1,Red leather handbag,again,bags,80\n")   # duplicate_key (one of the two P1 rows)
REVIEWS_CSV = ("who,sku,at,stars,body\n"
               "c1,P1,2025-03-05 10:00:00,5,Love it great quality\n"
               "c2,P1,2025-03-06 10:00:00,,\n"             # no rating, no text: kept
               "c3,P1,yesterday,4,Fine\n"                  # bad_timestamp
               "c4,P2,2025-03-07 10:00:00,7,Too many stars\n"  # bad_rating (above max_rating 5)
               "c5,P2,2025-03-07 10:00:00,abc,Text\n"      # bad_rating (not a number)
               ",P2,2025-03-07 10:00:00,3,No user\n"       # null_user_id
               "c6,,2025-03-07 10:00:00,3,No product\n"    # null_product_id
               "c1,P1,2025-03-05 10:00:00,5,Love it great quality\n"  # duplicate_key
               "c7,P2,2025-05-01 10:00:00,1,From the future\n")  # after_run_date


def test_products_and_reviews_sources_load_with_rejects(spark, lakehouse, write_conf, tmp_path):
    (tmp_path / "orders.csv").write_text("u,o,t,a\nc1,o1,2025-03-01 10:00:00,10\n")
    (tmp_path / "products.csv").write_text(PRODUCTS_CSV)
    (tmp_path / "reviews.csv").write_text(REVIEWS_CSV)
    cfg = _conf(write_conf, lakehouse, (
        f"  orders:\n    path: {tmp_path / 'orders.csv'}\n"
        "    columns: {user_id: u, order_id: o, order_ts: t, amount: a}\n"
        f"  products:\n    path: {tmp_path / 'products.csv'}\n"
        f"    columns: {{product_id: sku, title: name, description: blurb, category: cat, price: list_price}}\n"
        f"  reviews:\n    path: {tmp_path / 'reviews.csv'}\n"
        f"    columns: {{user_id: who, product_id: sku, review_ts: at, rating: stars, text: body}}\n"))
    cfg = cfg.__class__(**{**cfg.__dict__, "ingest": cfg.ingest.__class__(max_reject_share=1.0)})
    summary = job.run_ingest(_ctx(cfg, "ingest"))
    assert summary["tables"]["products"]["reject_reasons"] == {"null_product_id": 1, "bad_price": 2,
                                                                 "duplicate_key": 1}
    assert summary["tables"]["reviews"]["reject_reasons"] == {"null_user_id": 1, "null_product_id": 1,
                                                                "bad_timestamp": 1, "bad_rating": 2,
                                                                "after_run_date": 1, "duplicate_key": 1}
    assert "order_lines" not in summary["tables"]  # the orders source maps no product_id
    products = _table(spark, lakehouse, "products").drop("run_id")
    assert sorted(r["product_id"] for r in products.collect()) == ["P1", "P2"]
    assert products.filter("product_id = 'P2'").first().asDict() == {
        "product_id": "P2", "title": None, "description": None, "category": "kitchen", "price": 15.0}
    reviews = _table(spark, lakehouse, "reviews").drop("run_id")
    expected = spark.createDataFrame([
        ("c1", "P1", dt.datetime(2025, 3, 5, 10), 5.0, "Love it great quality"),
        ("c2", "P1", dt.datetime(2025, 3, 6, 10), None, None),
    ], reviews.schema)
    assert_df_equality(reviews, expected, ignore_row_order=True, ignore_nullable=True)
    rejects = _table(spark, lakehouse, "reviews_rejects")
    raw = {json.loads(r["raw"]).get("who"): r["reject_reason"] for r in rejects.collect()
           if r["reject_reason"] != "duplicate_key"}
    assert raw == {"c3": "bad_timestamp", "c4": "bad_rating", "c5": "bad_rating", None: "null_user_id",
                   "c6": "null_product_id", "c7": "after_run_date"}
