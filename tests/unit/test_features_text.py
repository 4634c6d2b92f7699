"""Text features: projected product profiles (spend-, else view-weighted), review count / rating / sentiment."""
import datetime as dt

import pytest
from chispa import assert_approx_df_equality

from ulv_spark.config import FeaturesConf
from ulv_spark.features import build_training_examples, build_user_features, declared_features
from ulv_spark.features.inputs import history
from ulv_spark.features.text import (TextInputs, product_profile, project_products, review_activity,
                                     review_scores)

D = dt.date(2025, 4, 1)
EMB_DDL = "product_id string, has_text boolean, embedding array<float>"
LINES_DDL = "user_id string, product_id string, order_ts timestamp, amount double"
EVENTS_DDL = "user_id string, event_ts timestamp, event_type string, product_id string"
REVIEWS_DDL = "user_id string, review_ts timestamp, rating double, has_text boolean, embedding array<float>"
CFG = FeaturesConf(text_dims=2, windows_days=[30], event_types=["view"])


def _ts(day, month=3):
    return dt.datetime(2025, month, day, 12)


def _embeddings(spark):
    return spark.createDataFrame([("P1", True, [1.0, 0.0, 0.0]), ("P2", True, [0.0, 0.6, 0.8]),
                                  ("P3", False, [0.0, 0.0, 0.0])], EMB_DDL)


COMPONENTS = [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]


def test_project_products_keeps_products_with_text_and_dots_each_component(spark):
    got = project_products(_embeddings(spark), COMPONENTS)
    expected = spark.createDataFrame([("P1", 1.0, 0.0), ("P2", 0.0, 0.7)],
                                     "product_id string, text_dim_0 double, text_dim_1 double")
    assert_approx_df_equality(got, expected, 1e-6, ignore_row_order=True, ignore_nullable=True)


def test_product_profile_weights_by_net_spend_else_by_views_and_only_before_as_of(spark):
    vectors = project_products(_embeddings(spark), COMPONENTS)
    lines = spark.createDataFrame([
        ("u1", "P1", _ts(1), 30.0), ("u1", "P1", _ts(2), -10.0),   # net 20 on P1
        ("u1", "P2", _ts(3), 10.0),
        ("u1", "P3", _ts(3), 99.0),                                 # no text: left out
        ("u1", "P2", _ts(1, 4), 500.0),                             # on as_of: not seen
        ("u3", "P1", _ts(4), 5.0), ("u3", "P1", _ts(5), -5.0),      # net 0: not bought
    ], LINES_DDL)
    views = spark.createDataFrame([
        ("u1", _ts(5), "view", "P2"),                               # u1 bought: views ignored
        ("u2", _ts(5), "view", "P2"), ("u2", _ts(6), "view", "P2"), ("u2", _ts(7), "view", "P1"),
        ("u3", _ts(8), "view", "P2"),
    ], EVENTS_DDL)
    got = product_profile(history(lines, "order_ts", [D]), history(views, "event_ts", [D]), vectors, dims=2)
    expected = spark.createDataFrame([
        ("u1", D, 1.0, 20.0 / 30.0, 10.0 * 0.7 / 30.0),
        ("u2", D, 1.0, 1.0 / 3.0, 2.0 * 0.7 / 3.0),
        ("u3", D, 1.0, 0.0, 0.7),
    ], "user_id string, as_of_date date, has_product_text double, text_dim_0 double, text_dim_1 double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def _reviews(spark):
    return spark.createDataFrame([
        ("u1", _ts(1), 5.0, True, [1.0, 0.0, 0.0]),     # positive concept: +1
        ("u1", _ts(2), None, True, [0.0, 1.0, 0.0]),    # negative concept: -1, no rating
        ("u1", _ts(3), 3.0, False, [0.0, 0.0, 0.0]),    # no text: no sentiment
        ("u2", _ts(3), None, False, [0.0, 0.0, 0.0]),   # neither
        ("u2", _ts(1, 4), 1.0, True, [0.0, 1.0, 0.0]),  # on as_of: not seen
    ], REVIEWS_DDL)


def test_review_activity_counts_rates_and_scores_sentiment_before_as_of(spark):
    scores = review_scores(_reviews(spark), positive=[1.0, 0.0, 0.0], negative=[0.0, 1.0, 0.0])
    got = review_activity(history(scores, "review_ts", [D]))
    expected = spark.createDataFrame([("u1", D, 3.0, 4.0, 0.0), ("u2", D, 1.0, 0.0, 0.0)],
                                     "user_id string, as_of_date date, review_count double, "
                                     "review_mean_rating double, review_sentiment double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    one = review_activity(history(scores.filter("rating = 5"), "review_ts", [D])).first()
    assert (one["review_mean_rating"], one["review_sentiment"]) == (5.0, 1.0)


def _orders(spark):
    return spark.createDataFrame([("u1", "o1", _ts(1), 30.0), ("u2", "o2", _ts(2), 10.0),
                                  ("u4", "o4", _ts(2), 10.0)],
                                 "user_id string, order_id string, order_ts timestamp, amount double")


def _text(spark):
    lines = spark.createDataFrame([("u1", "P1", _ts(1), 30.0)], LINES_DDL)
    scores = review_scores(_reviews(spark), positive=[1.0, 0.0, 0.0], negative=[0.0, 1.0, 0.0])
    return TextInputs(order_lines=lines, product_vectors=project_products(_embeddings(spark), COMPONENTS),
                      reviews=scores)


TEXT_COLUMNS = ["has_product_text", "text_dim_0", "text_dim_1", "review_count", "review_mean_rating",
                "review_sentiment"]


def test_user_features_carry_the_text_features_with_defaults_for_users_without_text(spark):
    events = spark.createDataFrame([("u2", _ts(3), "view", "P2")], EVENTS_DDL)
    got = build_user_features(_orders(spark), events, as_of=D, features_cfg=CFG, text=_text(spark))
    assert [d.name for d in declared_features(CFG)][-6:] == TEXT_COLUMNS
    rows = {r["user_id"]: tuple(round(r[c], 9) for c in TEXT_COLUMNS) for r in got.collect()}
    assert rows == {"u1": (1.0, 1.0, 0.0, 3.0, 4.0, 0.0),
                    "u2": (1.0, 0.0, 0.7, 1.0, 0.0, 0.0),   # viewed P2, one review without text or rating
                    "u4": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)}


def test_without_text_inputs_the_text_features_are_defaults_and_text_false_leaves_them_out(spark):
    plain = build_user_features(_orders(spark), as_of=D, features_cfg=CFG)
    assert {tuple(r[c] for c in TEXT_COLUMNS) for r in plain.collect()} == {(0.0,) * 6}
    off = FeaturesConf(text=False, text_dims=2, windows_days=[30], event_types=["view"])
    without = build_user_features(_orders(spark), as_of=D, features_cfg=off, text=_text(spark))
    assert not set(TEXT_COLUMNS) & set(without.columns)
    # ... and the per-event text of the sequences with them (null here: no order lines with order ids)
    assert plain.filter("seq_text is not null").count() == 0
    assert without.columns == [c for c in plain.columns if c not in TEXT_COLUMNS + ["seq_text"]]
    examples = build_training_examples(_orders(spark), as_of=dt.date(2025, 4, 11), horizon_days=10,
                                       features_cfg=FeaturesConf(text_dims=2, windows_days=[30],
                                                                 event_types=["view"], training_origins=1),
                                       text=_text(spark))
    u1 = examples.filter("user_id = 'u1'").first()
    assert tuple(round(u1[c], 9) for c in TEXT_COLUMNS) == (1.0, 1.0, 0.0, 3.0, 4.0, 0.0)


def test_text_dims_is_checked():
    with pytest.raises(ValueError, match="text_dims"):
        FeaturesConf(text_dims=0)
    with pytest.raises(ValueError, match="text_supervised"):
        FeaturesConf(text_supervised=3)
    assert FeaturesConf(text_dims=1).text_supervised == 2   # fitted as min(2, text_dims) supervised components


ORDERS_DDL = "user_id string, order_id string, order_ts timestamp, amount double, is_return boolean"
ORDER_LINES_DDL = "user_id string, order_id string, product_id string, amount double"


def test_purchase_outcomes_reads_only_windows_closed_before_the_cutoff_and_shrinks_to_the_prior(spark):
    import math

    from ulv_spark.features.text import purchase_outcomes

    day = lambda d: dt.datetime(2025, 1, 1, 12) + dt.timedelta(days=d)  # noqa: E731
    orders = spark.createDataFrame([
        ("u1", "o1", day(0), 30.0, False), ("u1", "o2", day(5), 20.0, False),   # o1: bought again, 20 spent
        ("u1", "r2", day(6), -5.0, True),                                       # o2's window: only a return
        ("u2", "o3", day(1), 40.0, False), ("u2", "o4", day(19), 10.0, False),  # o3: next order after 18 days
        ("u3", "o5", day(25), 50.0, False),                                     # window ends after the cutoff
        ("u3", "o6", day(31), 70.0, False),                                     # on / after the cutoff: unseen
    ], ORDERS_DDL)
    lines = spark.createDataFrame([
        ("u1", "o1", "P1", 10.0), ("u1", "o1", "P2", 20.0), ("u1", "o2", "P1", 20.0),
        ("u1", "r2", "P1", -5.0),            # a return line: not a purchase
        ("u2", "o3", "P2", 40.0), ("u2", "o4", "P2", 10.0), ("u2", "o4", None, 1.0),
        ("u3", "o5", "P3", 50.0),
    ], ORDER_LINES_DDL)
    got = {r["product_id"]: r for r in purchase_outcomes(orders, lines, before=dt.date(2025, 1, 31),
                                                         horizon_days=10, prior_weight=1.0).collect()}
    # purchase lines with a closed window (t + 10 days < Jan 31): o1 (P1, P2), o2 (P1), o3 (P2), o4 (P2)
    outcome = {"o1": (1.0, math.log1p(15.0)), "o2": (0.0, 0.0), "o3": (0.0, 0.0), "o4": (0.0, 0.0)}
    # o1's window (day 0, day 10]: o2 (+20) and r2 (-5), o3 and o4 are u2's; o2's: r2 only, -5 -> 0
    prior = [sum(v[i] for v in (outcome["o1"], outcome["o1"], outcome["o2"], outcome["o3"], outcome["o4"])) / 5
             for i in (0, 1)]
    per_line = {"P1": ["o1", "o2"], "P2": ["o1", "o3", "o4"]}
    assert set(got) == {"P1", "P2"}
    for product, orders_of in per_line.items():
        assert got[product]["lines"] == len(orders_of)
        for i, name in enumerate(("retained", "next_spend")):
            want = (sum(outcome[o][i] for o in orders_of) + prior[i]) / (len(orders_of) + 1.0)
            assert got[product][name] == pytest.approx(want, abs=1e-9), (product, name)


def test_the_supervised_components_point_at_what_predicts_the_outcome(spark):
    """Products whose buyers come back differ along one embedding axis; the fitted direction finds it."""
    import numpy as np

    from ulv_spark.features.job import SUPERVISED_MIN_PRODUCTS, fit_projection

    rng = np.random.default_rng(0)
    n = 2 * SUPERVISED_MIN_PRODUCTS
    kind = np.arange(n) % 2                                  # axis 3 carries the kind, axes 0-2 most variance
    emb = np.column_stack([rng.normal(0, 1.0, (n, 3)), 0.2 * (2 * kind - 1) + rng.normal(0, 0.02, n)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    embeddings = spark.createDataFrame([(f"P{i}", True, "m", [float(x) for x in emb[i]]) for i in range(n)],
                                       "product_id string, has_text boolean, model_id string, embedding array<float>")
    outcomes = spark.createDataFrame([(f"P{i}", 10.0, 0.3 + 0.4 * float(kind[i]), 1.0 + float(kind[i]))
                                      for i in range(n)],
                                     "product_id string, lines double, retained double, next_spend double")
    components, variance, fitted = fit_projection(embeddings, model_id="m", dims=3, outcomes=outcomes, supervised=2)
    assert fitted == n and len(components) == 3 and variance[0] is not None and variance[1:] == [None, None]
    for direction in components[1:]:
        w = np.asarray(direction)
        assert np.linalg.norm(w) == pytest.approx(1.0)
        assert w[3] > 0.9                                    # towards more retention / spend
    assert abs(components[0][3]) < 0.3                       # the principal component is a variance axis

    # too few products with outcomes: principal components only
    few = outcomes.limit(SUPERVISED_MIN_PRODUCTS - 1)
    components, variance, _ = fit_projection(embeddings, model_id="m", dims=3, outcomes=few, supervised=2)
    assert len(components) == 3 and None not in variance
