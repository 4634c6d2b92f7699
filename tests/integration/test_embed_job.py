"""`embed` end to end on real Spark + Delta + the packaged MiniLM: exact rows, incremental re-runs.

Tiny hand-written bronze `products` and `reviews` tables (missing, empty, duplicate, invalid
UTF-8 and very long texts); the vectors written through the pandas UDF are compared with the
encoder run in this process.
"""
import datetime as dt
import json

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ulv_spark import cli, lake
from ulv_spark.catalog import PRODUCTS, REVIEWS
from ulv_spark.config import load_config
from ulv_spark.context import JobContext
from ulv_spark.text.encoder import describe_encoder, embed_texts, get_encoder
from ulv_spark.text.job import run_embed
from ulv_spark.text.normalise import text_hash

pytestmark = pytest.mark.slow

SHOE = ("Red running shoes", "Lightweight road running shoe with a\nbreathable mesh upper.")
PRODUCT_ROWS = [  # product_id, title, description, category, price
    ("p1", *SHOE, "shoes", 89.0),
    ("p2", "Trail running sneakers", None, "shoes", 120.0),
    ("p3", None, "Stainless steel saucepan, 2 litres,  induction-ready.", "kitchen", 35.0),
    ("p4", "  ", None, "misc", 1.0),                 # no text at all
    ("p5", *SHOE, "shoes", 79.0),                    # the same text as p1: embedded once
]
PRODUCT_TEXTS = {"p1": "Red running shoes. Lightweight road running shoe with a breathable mesh upper.",
                 "p2": "Trail running sneakers", "p3": "Stainless steel saucepan, 2 litres, induction-ready.",
                 "p4": "", "p5": "Red running shoes. Lightweight road running shoe with a breathable mesh upper."}
LATIN1 = b"Tr\xe8s bien, caf\xe9 cr\xe8me parfait"       # not UTF-8
LONG_REVIEW = "These shoes are great. " * 120             # ~600 tokens: truncated at 256


def _ts(day):
    return dt.datetime(2025, 3, day, 12, 0)


REVIEW_ROWS = [  # user_id, product_id, review_ts, rating, text (bytes: written as raw bytes into STRING)
    ("u1", "p1", _ts(1), 5.0, "Great shoes, very comfortable!"),
    ("u2", "p1", _ts(2), 2.0, "Too small.\n\nSent them back."),
    ("u3", "p3", _ts(3), 4.0, LATIN1),
    ("u4", "p2", _ts(4), None, None),
    ("u5", "p2", _ts(5), 3.0, LONG_REVIEW),
    ("u6", "p3", _ts(6), 5.0, "Great shoes, very comfortable!"),
]
REVIEW_KEY = ("user_id", "product_id", "review_ts")


def _write_products(spark, cfg, rows=PRODUCT_ROWS):
    ref = lake.table_ref(cfg.lakehouse, "products")
    df = spark.createDataFrame([(*r, "ingest-0") for r in rows], PRODUCTS.ddl().replace(" NOT NULL", ""))
    lake.append(spark, df, ref, PRODUCTS)


def _write_reviews(spark, cfg):
    ref = lake.table_ref(cfg.lakehouse, "reviews")
    raw = [(u, p, ts, rating, text.encode("utf-8") if isinstance(text, str) else text, "ingest-0")
           for u, p, ts, rating, text in REVIEW_ROWS]
    df = spark.createDataFrame(raw, "user_id string, product_id string, review_ts timestamp, rating double, "
                                    "text binary, run_id string")
    # a BINARY cast to STRING keeps the invalid bytes, as a raw CSV read would
    lake.append(spark, df.withColumn("text", F.col("text").cast("string")), ref, REVIEWS)


def _conf(root, schema, extra=""):
    path = root / f"{schema}.yaml"
    path.write_text(f"lakehouse:\n  root: {root / schema}\n  schema: {schema}\n  shared_dir: {root / schema / '_s'}\n"
                    f"embed:\n  batch_size: 4\n  partitions: 2\n{extra}", encoding="utf-8")
    return path


def _run(spark, conf, run_id, overrides=None):
    cfg = load_config(conf, overrides)
    return run_embed(JobContext(cfg=cfg, as_of=dt.date(2025, 3, 10), run_id=run_id, command="embed", _spark=spark))


def _read(spark, cfg, name):
    return lake.read_table(spark, lake.table_ref(cfg.lakehouse, name))


@pytest.fixture(scope="module")
def env(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_job")
    conf = _conf(root, "embed_it")
    cfg = load_config(conf)
    _write_products(spark, cfg)
    _write_reviews(spark, cfg)
    first = _run(spark, conf, "run-1")
    return {"conf": conf, "cfg": cfg, "first": first, "info": describe_encoder()}


def test_first_run_embeds_every_distinct_text_once(env):
    products, reviews = env["first"]["tables"]["product_embeddings"], env["first"]["tables"]["review_embeddings"]
    assert env["first"]["model_id"] == env["info"].model_id
    pick = ("source_rows", "rows_skipped", "rows_written", "rows_without_text", "texts_embedded", "texts_truncated")
    assert {k: products[k] for k in pick} == {"source_rows": 5, "rows_skipped": 0, "rows_written": 5,
                                              "rows_without_text": 1, "texts_embedded": 3, "texts_truncated": 0}
    assert {k: reviews[k] for k in pick} == {"source_rows": 6, "rows_skipped": 0, "rows_written": 6,
                                             "rows_without_text": 1, "texts_embedded": 4, "texts_truncated": 1}
    assert products["tasks"] == 2 and "texts_per_s" in products and "embed_seconds" in products


def test_product_rows_and_hashes_are_exact_and_vectors_match_the_encoder(spark, env):
    cfg, model_id = env["cfg"], env["info"].model_id
    got = _read(spark, cfg, "product_embeddings")
    texts = [PRODUCT_TEXTS[f"p{i}"] for i in range(1, 6)]
    direct = get_encoder().encode(texts)
    expected = spark.createDataFrame(
        [(f"p{i + 1}", text_hash(t), bool(direct.has_text[i]), int(direct.n_tokens[i]), False, model_id, 384, "run-1")
         for i, t in enumerate(texts)],
        "product_id string, text_hash string, has_text boolean, n_tokens int, truncated boolean, model_id string, "
        "dim int, run_id string")
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    vectors = {r["product_id"]: np.array(r["embedding"], dtype=np.float32)
               for r in got.select("product_id", "embedding").collect()}
    np.testing.assert_allclose(np.stack([vectors[f"p{i}"] for i in range(1, 6)]), direct.vectors, atol=1e-5)
    np.testing.assert_array_equal(vectors["p4"], np.zeros(384, dtype=np.float32))
    assert abs(float(vectors["p1"] @ vectors["p2"])) > abs(float(vectors["p1"] @ vectors["p3"]))


def test_review_rows_keep_the_key_decode_bad_bytes_and_flag_truncation(spark, env):
    cfg, model_id = env["cfg"], env["info"].model_id
    got = _read(spark, cfg, "review_embeddings")
    raw = [r[4] for r in REVIEW_ROWS]
    direct = get_encoder().encode(raw)
    expected = spark.createDataFrame(
        [(u, p, ts, rating, text_hash(t), bool(direct.has_text[i]), int(direct.n_tokens[i]), bool(direct.truncated[i]),
          model_id, 384, "run-1") for i, (u, p, ts, rating, t) in enumerate(REVIEW_ROWS)],
        "user_id string, product_id string, review_ts timestamp, rating double, text_hash string, has_text boolean, "
        "n_tokens int, truncated boolean, model_id string, dim int, run_id string")
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    assert direct.truncated.tolist() == [False, False, False, False, True, False]
    assert got.filter(F.col("user_id") == "u3").first()["text_hash"] == text_hash("Tr\ufffds bien, caf\ufffd cr\ufffdme parfait")
    vectors = {r["user_id"]: r["embedding"] for r in got.select("user_id", "embedding").collect()}
    np.testing.assert_allclose(np.array([vectors[r[0]] for r in REVIEW_ROWS], dtype=np.float32), direct.vectors,
                               atol=1e-5)


def test_a_rerun_embeds_nothing_and_leaves_the_tables_alone(spark, env):
    cfg = env["cfg"]
    versions = {n: lake.current_version(spark, lake.table_ref(cfg.lakehouse, n))
                for n in ("product_embeddings", "review_embeddings")}
    again = _run(spark, env["conf"], "run-2")
    for name, source_rows in (("product_embeddings", 5), ("review_embeddings", 6)):
        facts = again["tables"][name]
        assert (facts["texts_embedded"], facts["rows_written"], facts["rows_skipped"]) == (0, 0, source_rows)
        assert facts["version"] == versions[name]


def test_a_changed_title_or_rating_rewrites_exactly_that_row_and_a_new_encoder_everything(spark, env):
    cfg, conf = env["cfg"], env["conf"]
    products_ref, reviews_ref = lake.table_ref(cfg.lakehouse, "products"), lake.table_ref(cfg.lakehouse, "reviews")
    spark.sql(f"UPDATE {products_ref.name} SET title = 'Waterproof trail running sneakers' WHERE product_id = 'p2'")
    spark.sql(f"UPDATE {reviews_ref.name} SET rating = 1.0 WHERE user_id = 'u2'")
    third = _run(spark, conf, "run-3")
    products, reviews = third["tables"]["product_embeddings"], third["tables"]["review_embeddings"]
    assert (products["texts_embedded"], products["rows_written"], products["rows_skipped"]) == (1, 1, 4)
    assert (reviews["rows_written"], reviews["rows_skipped"]) == (1, 5)
    got = _read(spark, cfg, "product_embeddings")
    runs = {r["product_id"]: r["run_id"] for r in got.select("product_id", "run_id").collect()}
    assert runs == {"p1": "run-1", "p2": "run-3", "p3": "run-1", "p4": "run-1", "p5": "run-1"}
    p2 = got.filter(F.col("product_id") == "p2").first()
    assert p2["text_hash"] == text_hash("Waterproof trail running sneakers")
    np.testing.assert_allclose(np.array(p2["embedding"], dtype=np.float32),
                               embed_texts(["Waterproof trail running sneakers"])[0], atol=1e-5)
    u2 = _read(spark, cfg, "review_embeddings").filter(F.col("user_id") == "u2").first()
    assert (u2["rating"], u2["run_id"]) == (1.0, "run-3")

    # another encoder configuration (max_length 128) is another model_id: every row is re-embedded
    fourth = _run(spark, conf, "run-4", {"embed.max_length": 128})
    assert fourth["model_id"] != env["info"].model_id and fourth["max_length"] == 128
    assert fourth["tables"]["product_embeddings"]["rows_written"] == 5
    assert fourth["tables"]["review_embeddings"]["texts_truncated"] == 1
    ids = _read(spark, cfg, "review_embeddings").groupBy("model_id", "run_id").count().collect()
    assert [(r["model_id"], r["run_id"], r["count"]) for r in ids] == [(fourth["model_id"], "run-4", 6)]


def test_cli_embed_skips_a_missing_reviews_table_with_a_summary_line(spark, tmp_path, capsys):
    conf = _conf(tmp_path, "embed_cli")
    _write_products(spark, load_config(conf), rows=PRODUCT_ROWS[:2])
    assert cli.main(["embed", "--conf", str(conf), "--run-id", "cli-1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tables"]["review_embeddings"] == {
        "skipped": "no reviews table (embed_cli.reviews): nothing to embed"}
    assert out["tables"]["product_embeddings"]["texts_embedded"] == 2


def test_cli_embed_fails_clearly_when_the_encoder_dir_is_not_local(tmp_path, capsys):
    conf = _conf(tmp_path, "embed_bad", extra=f"  encoder_dir: {tmp_path / 'no-such-model'}\n")
    assert cli.main(["embed", "--conf", str(conf)]) == 1
    assert "is not a local directory" in capsys.readouterr().err


def _write_shop(spark, cfg, n_products=60):
    """Products of two kinds, each bought by 3 users on 5 January; a refill's buyers buy it again on the 15th."""
    from ulv_spark.catalog import ORDER_LINES, ORDERS

    products, orders, lines = [], [], []
    for i in range(n_products):
        refill = i % 2 == 0
        title = f"Refill pack {i} of coffee capsules" if refill else f"Garden gazebo model {i}"
        products.append((f"p{i:02d}", title, None, "misc", 10.0))
        for j in range(3):
            for day in ((5, 15) if refill else (5,)):
                ts, order_id = dt.datetime(2025, 1, day, 10), f"o{i}-{j}-{day}"
                orders.append((f"u{i}-{j}", order_id, ts, ts.date(), 10.0, 1.0, 1, "misc", None, False, "i-0"))
                lines.append((order_id, "1", f"u{i}-{j}", f"p{i:02d}", ts, 1.0, 10.0, "i-0"))
    _write_products(spark, cfg, rows=products)
    for contract, rows in ((ORDERS, orders), (ORDER_LINES, lines)):
        df = spark.createDataFrame(rows, contract.ddl().replace(" NOT NULL", ""))
        lake.append(spark, df, lake.table_ref(cfg.lakehouse, contract.name), contract)


def test_a_finetuned_encoder_is_fitted_once_on_purchase_outcomes_and_embeds_everything(spark, tmp_path):
    from ulv_spark.features.job import concept_vectors
    from ulv_spark.text import finetune
    from ulv_spark.text.job import current_encoder_dir

    extra = (f"  finetune_layers: 1\n  finetune_epochs: 1\n  finetune_dir: {tmp_path / 'encoders'}\n"
             "run:\n  horizon_days: 30\n")
    conf = _conf(tmp_path, "embed_ft", extra=extra)
    cfg = load_config(conf)
    base = describe_encoder()
    # no orders yet: the shipped encoder embeds, and the summary says why
    _write_products(spark, cfg, rows=PRODUCT_ROWS[:2])
    first = _run(spark, conf, "ft-0")
    assert first["finetune"]["how"] == "not fitted: no embed_ft.orders / embed_ft.order_lines table"
    assert first["model_id"] == base.model_id and current_encoder_dir(cfg) is None

    _write_shop(spark, cfg)
    second = _run(spark, conf, "ft-1")
    tuned = second["finetune"]
    assert tuned["how"] == "fitted" and tuned["products"] == 60 and tuned["history_before"] == "2025-03-10"
    assert [h["epoch"] for h in tuned["history"]] == [0, 1]
    path = finetune.finetuned_dir(str(tmp_path / "encoders"), base, 1)
    assert tuned["path"] == str(path) == current_encoder_dir(cfg) == second["encoder_dir"]
    assert second["model_id"] == describe_encoder(str(path)).model_id != base.model_id
    assert second["tables"]["product_embeddings"]["rows_written"] == 62   # the 2 earlier rows re-embedded too
    stored_ids = _read(spark, cfg, "product_embeddings").select("model_id").distinct().collect()
    assert [r[0] for r in stored_ids] == [second["model_id"]]
    assert concept_vectors(cfg)[0] == second["model_id"]   # the review concepts use the same encoder

    third = _run(spark, conf, "ft-2")
    assert third["finetune"]["how"] == "stored" and third["model_id"] == second["model_id"]
    assert third["tables"]["product_embeddings"]["texts_embedded"] == 0
