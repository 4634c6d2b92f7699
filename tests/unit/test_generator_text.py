"""The generated shop's texts: a catalogue whose words carry tier and kind, products and reviews that follow
the users' latent traits (numpy only, no Spark)."""
import numpy as np
import pandas as pd

from ulv_spark.config import GenerateConf
from ulv_spark.synthetic import text
from ulv_spark.synthetic.generator import GeneratorParams, Simulation, raw_orders


def _sim(users=3000, partition=0):
    return Simulation(GeneratorParams(GenerateConf(users=users, partitions=1, texts=True)), partition)


def test_catalogue_words_follow_tier_and_kind():
    cat = text.catalogue(["fashion", "home"], 12)
    assert len(cat) == 24 and list(cat["sku"][:3]) == ["fashion-000", "fashion-001", "fashion-002"]
    assert cat.loc[0].tolist() == ["fashion-000", "Basic handbag",
                                   "basic handbag in plain plastic, one-off gift edition.", "fashion", 15.0]
    tier, kind, _ = text.product_parts(np.arange(12))
    for j in range(12):
        description = cat["product_description"][j]
        assert any(w in description for w in text.TIER_WORDS[tier[j]])
        assert any(p in description for p in text.KIND_PHRASES[kind[j]])
    assert cat.equals(text.catalogue(["fashion", "home"], 12))


def test_products_and_reviews_follow_the_latent_traits():
    sim = _sim()
    orders = text.raw_order_products(sim)
    det = sim.order_details()
    assert len(orders) == len(det) and (orders["category"].to_numpy() == det["category"].to_numpy()).all()
    tier, kind, _ = text.product_parts(orders["product"].to_numpy())
    users = det["user"].to_numpy()
    # premium products go with bigger spenders, re-ordered kinds with loyal (low-dropout) users
    assert np.corrcoef(tier, text.spend_score(sim)[users])[0, 1] > 0.3
    assert np.corrcoef(kind, text.loyalty(sim)[users])[0, 1] > 0.3
    reviews = text.raw_reviews(sim)
    assert 0.2 < len(reviews) / len(det) < 0.35
    rated = reviews.dropna(subset=["stars"])
    per_user = rated.groupby("user")["stars"].mean()
    loyalty = pd.Series(text.loyalty(sim), index=sim.user_index)[per_user.index]
    assert np.corrcoef(per_user.to_numpy(), loyalty.to_numpy())[0, 1] > 0.4
    one_star = reviews[reviews["stars"] == 1.0]["review_text"].dropna()
    assert one_star.str.contains("refund|broke|never again", case=False).all()
    # a second simulation of the partition draws the same texts; the order log itself is untouched
    again = _sim()
    pd.testing.assert_frame_equal(text.raw_reviews(again), reviews)
    pd.testing.assert_frame_equal(raw_orders(again), raw_orders(sim))


def test_the_taste_shows_in_the_product_words_and_drives_dropout_and_spend():
    sim = _sim()
    # the taste comes from its own stream: without texts the same seed draws the same other traits
    plain = Simulation(GeneratorParams(GenerateConf(users=3000, partitions=1, texts=False)), 0)
    assert (plain.taste == 0).all() and np.array_equal(plain.lam, sim.lam)
    assert np.array_equal(plain.category_cdf, sim.category_cdf)
    p, nu = text.apply_taste(plain.p_drop, plain.nu, sim.taste)
    assert np.array_equal(sim.p_drop, p) and np.array_equal(sim.nu, nu)
    # higher taste: lower dropout logit, larger spend scale (exactly by the configured factors)
    logit = lambda q: np.log(q) - np.log1p(-q)  # noqa: E731
    assert np.allclose(logit(sim.p_drop), logit(plain.p_drop) - text.TASTE_DROPOUT * sim.taste)
    assert np.allclose(np.log(plain.nu / sim.nu), text.TASTE_SPEND * sim.taste)
    # ... and it is independent of the purchase rate, so the timing alone does not reveal it
    assert abs(np.corrcoef(sim.taste, np.log(sim.lam))[0, 1]) < 0.06
    # the maker line (odd models, with maker words in the title) follows the taste
    orders = text.raw_order_products(sim)
    line = text.product_line(orders["product"].to_numpy())
    users = sim.order_details()["user"].to_numpy()
    assert np.corrcoef(line, sim.taste[users])[0, 1] > 0.4
    cat = text.catalogue(["fashion"], 12)
    assert cat["product_name"].tolist()[6] == "Simple handmade sneakers"
    assert all(w not in n for n in cat["product_name"][:6] for w in text.LINE_WORDS)
    assert all(any(w in n for w in text.LINE_WORDS) for n in cat["product_name"][6:])
