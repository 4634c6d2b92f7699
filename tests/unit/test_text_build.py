"""The embed job's pure DataFrame steps on hand-written rows: texts, what changed, output rows."""
import datetime as dt

from chispa import assert_df_equality

from ulv_spark.catalog import PRODUCT_EMBEDDINGS, REVIEW_EMBEDDINGS
from ulv_spark.text import build
from ulv_spark.text.normalise import text_hash

PRODUCTS_DDL = "product_id string, title string, description string, category string, price double"
TEXTS_DDL = "product_id string, text string, text_hash string"
REVIEW_TEXTS_DDL = ("user_id string, product_id string, review_ts timestamp, rating double, text string, "
                    "text_hash string")
TS = dt.datetime(2025, 3, 1, 12, 0)
M1, M2 = "enc@1111111111111111", "enc@2222222222222222"


def test_product_texts_join_normalised_title_and_description_and_keep_products_without_text(spark):
    products = spark.createDataFrame([
        ("p1", " Red  running shoes ", "Light\nand\tfast", "shoes", 80.0),
        ("p2", "Saucepan", None, "kitchen", 25.0),
        ("p3", None, "  Only a description ", "misc", None),
        ("p4", "  ", "", "misc", 1.0),
        ("p5", None, None, None, None),
    ], PRODUCTS_DDL)
    texts = ["Red running shoes. Light and fast", "Saucepan", "Only a description", "", ""]
    expected = spark.createDataFrame([(f"p{i + 1}", t, text_hash(t)) for i, t in enumerate(texts)], TEXTS_DDL)
    assert_df_equality(build.product_texts(products), expected, ignore_row_order=True, ignore_nullable=True)


def test_review_texts_normalise_the_text_and_keep_the_key_and_rating(spark):
    reviews = spark.createDataFrame([
        ("u1", "p1", TS, 5, "Great\n\nshoes!"),
        ("u2", "p1", TS, None, None),
    ], "user_id string, product_id string, review_ts timestamp, rating int, text string")
    expected = spark.createDataFrame([
        ("u1", "p1", TS, 5.0, "Great shoes!", text_hash("Great shoes!")),
        ("u2", "p1", TS, None, "", text_hash("")),
    ], REVIEW_TEXTS_DDL)
    assert_df_equality(build.review_texts(reviews), expected, ignore_row_order=True, ignore_nullable=True)


def test_pending_rows_are_new_keys_changed_texts_and_other_encoders_only(spark):
    texts = spark.createDataFrame([("p1", "same", "h1"), ("p2", "changed", "h2-new"), ("p3", "other model", "h3"),
                                   ("p4", "new product", "h4")], TEXTS_DDL)
    existing = spark.createDataFrame([("p1", "h1", M1), ("p2", "h2-old", M1), ("p3", "h3", M2), ("p9", "h9", M1)],
                                     "product_id string, text_hash string, model_id string")
    pending = build.pending_rows(texts, existing, keys=["product_id"], tracked=["text_hash"], model_id=M1)
    expected = spark.createDataFrame([("p2", "changed", "h2-new"), ("p3", "other model", "h3"),
                                      ("p4", "new product", "h4")], TEXTS_DDL)
    assert_df_equality(pending, expected, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(build.pending_rows(texts, None, keys=["product_id"], tracked=["text_hash"], model_id=M1),
                       texts, ignore_row_order=True)


def test_pending_reviews_compare_the_rating_null_safely(spark):
    texts = spark.createDataFrame([("u1", "p1", TS, None, "ok", "h"), ("u2", "p1", TS, 5.0, "ok", "h"),
                                   ("u3", "p1", TS, 4.0, "ok", "h")], REVIEW_TEXTS_DDL)
    existing = spark.createDataFrame([("u1", "p1", TS, None, "h", M1), ("u2", "p1", TS, 4.0, "h", M1),
                                      ("u3", "p1", TS, 4.0, "h", M1)],
                                     "user_id string, product_id string, review_ts timestamp, rating double, "
                                     "text_hash string, model_id string")
    pending = build.pending_rows(texts, existing, keys=["user_id", "product_id", "review_ts"],
                                 tracked=["text_hash", "rating"], model_id=M1)
    expected = spark.createDataFrame([("u2", "p1", TS, 5.0, "ok", "h")], REVIEW_TEXTS_DDL)
    assert_df_equality(pending, expected, ignore_row_order=True, ignore_nullable=True)


def test_distinct_texts_embed_each_text_once(spark):
    pending = spark.createDataFrame([("p1", "Mug", "hm"), ("p2", "Mug", "hm"), ("p3", "", "he")], TEXTS_DDL)
    expected = spark.createDataFrame([("hm", "Mug"), ("he", "")], "text_hash string, text string")
    assert_df_equality(build.distinct_texts(pending), expected, ignore_row_order=True, ignore_nullable=True)


def test_embedding_rows_follow_the_contracts(spark):
    pending = spark.createDataFrame([("p1", "Mug", "hm"), ("p2", "Mug", "hm"), ("p3", "", "he")], TEXTS_DDL)
    vectors = spark.createDataFrame([("hm", True, 3, False, [0.6, 0.8]), ("he", False, 0, False, [0.0, 0.0])],
                                    "text_hash string, has_text boolean, n_tokens int, truncated boolean, "
                                    "embedding array<float>")
    at = dt.datetime(2025, 3, 2, 8, 30, tzinfo=dt.timezone.utc)
    rows = build.embedding_rows(pending, vectors, key_columns=["product_id"], model_id=M1, dim=2, embedded_at=at,
                                run_id="embed-1")
    assert rows.columns == PRODUCT_EMBEDDINGS.column_names
    expected = spark.createDataFrame([
        ("p1", "hm", True, 3, False, M1, 2, [0.6, 0.8], dt.datetime(2025, 3, 2, 8, 30), "embed-1"),
        ("p2", "hm", True, 3, False, M1, 2, [0.6, 0.8], dt.datetime(2025, 3, 2, 8, 30), "embed-1"),
        ("p3", "he", False, 0, False, M1, 2, [0.0, 0.0], dt.datetime(2025, 3, 2, 8, 30), "embed-1"),
    ], PRODUCT_EMBEDDINGS.ddl())
    assert_df_equality(rows, expected, ignore_row_order=True, ignore_nullable=True)
    review_keys = REVIEW_EMBEDDINGS.column_names[:REVIEW_EMBEDDINGS.column_names.index("text_hash")]
    assert review_keys == ["user_id", "product_id", "review_ts", "rating"]
