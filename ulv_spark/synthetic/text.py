"""Texts of the simulated shop: a product catalogue whose words carry meaning, and reviews with a tone.

Switched on by ``generate.texts``. Every product (``<category>-<nnn>``, as in the events) has a
price tier (basic / standard / premium) and a kind (one-off vs. re-ordered), and its title and
description are built from a small vocabulary per category, tier and kind ("Premium handbag",
"premium handbag in genuine leather, refill pack for regular use"). The users' latent traits
choose the products they buy:

* the tier follows the user's Gamma-Gamma spend scale (big spenders buy premium), so product
  words reveal spend before many orders do;
* the kind follows the user's dropout probability (loyal users buy what is re-ordered), so
  product words reveal churn risk;
* about 30 % of purchases get a review 1-10 days later whose rating and wording follow the
  user's satisfaction, a noisy copy of the same loyalty ("Broken on arrival, I want a refund.");
* a latent **taste** per user (standard normal, :func:`draw_taste`) that only the texts reveal:
  every other product model is of the "maker" line, whose title and description carry maker
  words ("Premium handmade handbag", "... made by small independent makers"), and a user with
  taste t buys the maker line with probability expit(TASTE_LINE * t). The taste lowers the
  dropout logit by TASTE_DROPOUT * t and raises the spend scale by a factor exp(TASTE_SPEND * t)
  (:func:`apply_taste`, applied by the simulation to its latent p and nu), so it drives churn and
  spend. It is drawn independently of the purchase rate, the categories and the other traits: the
  category ids and the token layout carry nothing of it, and amounts and timing only reveal the
  latent p and nu it is one part of (noisily, after a few orders), while the words of the first
  product bought already name it. Reviews follow the latent loyalty, which includes it.

The order log gets the product of each order (``product_sku``). With ``generate.texts: false``
there is no taste and the output is exactly as before; with texts the taste changes the latent
p and nu, hence the simulated orders (times, amounts) and the truth, which come from the same
latent traits, so what the texts add is measurable against them. Text draws come from their own
seed streams (``SeedSequence([seed, partition, TEXT_STREAM])``, the taste ``TASTE_STREAM``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

TEXT_STREAM = 1515              # seed stream of the text draws (the simulation uses its own 8)
TASTE_STREAM = 1516             # seed stream of the latent taste
TASTE_LINE = 2.0                # P(a purchase is of the maker line) = expit(TASTE_LINE * taste)
TASTE_DROPOUT = 1.0             # logit(dropout probability) -= TASTE_DROPOUT * taste
TASTE_SPEND = 0.4               # mean spend per order *= exp(TASTE_SPEND * taste) (Gamma-Gamma nu /= ...)
LINE_WORDS = ("handmade", "organic", "artisan", "eco-friendly")  # in the maker line's titles
LINE_PHRASES = ("made by small independent makers", "crafted from recycled materials", "fair-trade, made in small batches")
REVIEW_SHARE = 0.3              # purchases that get a review
TIER_NAMES = ("basic", "standard", "premium")
TIER_WORDS = (("basic", "budget", "simple", "value"), ("classic", "everyday", "standard", "regular"),
              ("premium", "luxury", "handcrafted", "deluxe"))
MATERIALS = (("plain plastic", "thin fabric", "light materials"), ("sturdy materials", "good cotton", "solid build"),
             ("genuine leather", "solid oak", "fine silk", "brushed steel"))
KIND_PHRASES = (("one-off gift edition", "limited clearance item", "trial sample", "novelty one-time buy"),
                ("refill pack for regular use", "monthly supply subscription", "replacement set you reorder",
                 "everyday essential, reorder anytime"))
NOUNS = {"books": ("novel", "cookbook", "notebook"), "music": ("vinyl record", "headphones", "guitar strings"),
         "electronics": ("phone charger", "bluetooth speaker", "usb cable"),
         "fashion": ("handbag", "sneakers", "wool scarf"), "home": ("saucepan", "desk lamp", "bath towel"),
         "beauty": ("face cream", "shampoo", "lipstick"), "sports": ("yoga mat", "running shoes", "water bottle"),
         "toys": ("puzzle", "building blocks", "teddy bear")}
OTHER_NOUNS = ("item", "accessory", "gadget")
BASE_PRICE = 25.0
TIER_PRICE = (0.6, 1.0, 2.0)
REVIEW_PHRASES = {
    1: ("Broken on arrival, I want a refund.", "Terrible quality, broke after a day. Refund please.",
        "Awful, cheap and broken, never again."),
    2: ("Disappointing, not as described.", "Poor quality, expected more.", "Stopped working quickly, meh."),
    3: ("It is okay, does the job.", "Average, nothing special.", "Fine for the price, I guess."),
    4: ("Good value, happy with it.", "Nice, does what it says.", "Solid, would recommend."),
    5: ("Great quality, love it!", "Excellent, works perfectly, would buy again.", "Love it, great quality."),
}
PRODUCTS_PER_KIND_TIER = 6      # codes j = 6 * model + 3 * kind + tier; odd models are the maker line


def product_parts(j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tier, kind, model) of product codes j within a category."""
    j = np.asarray(j)
    return j % 3, (j // 3) % 2, j // PRODUCTS_PER_KIND_TIER


def product_line(j: np.ndarray) -> np.ndarray:
    """1 where product code j is of the maker line (an odd model), else 0."""
    return (np.asarray(j) // PRODUCTS_PER_KIND_TIER) % 2


def draw_taste(seed: int, partition: int, n: int) -> np.ndarray:
    """The latent taste of a partition's n users: standard normal, from its own seed stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, partition, TASTE_STREAM])).standard_normal(n)


def apply_taste(p_drop: np.ndarray, nu: np.ndarray, taste: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropout probability, Gamma-Gamma rate nu) shifted by the taste (see the module docstring)."""
    logit = np.log(p_drop) - np.log1p(-p_drop) - TASTE_DROPOUT * taste
    p = np.clip(0.5 * (1.0 + np.tanh(0.5 * logit)), 1e-12, 1.0 - 1e-9)
    return p, nu * np.exp(-TASTE_SPEND * taste)


def _nouns(category: str) -> tuple[str, ...]:
    return NOUNS.get(category, OTHER_NOUNS)


def catalogue(categories: list[str], per_category: int) -> pd.DataFrame:
    """The product catalogue: sku, product_name, product_description, category_name, list_price.

    Deterministic (no draws). Every 97th product has no description and every 211th no name,
    as real catalogues do.
    """
    rows = []
    for c, category in enumerate(categories):
        nouns = _nouns(category)
        for j in range(per_category):
            tier, kind, model = (int(x) for x in product_parts(np.array(j)))
            pick = (7 * j + 3 * c)
            noun = nouns[model % len(nouns)]
            word = TIER_WORDS[tier][pick % len(TIER_WORDS[tier])]
            line = f"{LINE_WORDS[(model // 2) % len(LINE_WORDS)]} " if model % 2 else ""
            name = f"{word.capitalize()} {line}{noun}"
            description = (f"{word} {line}{noun} in {MATERIALS[tier][pick % len(MATERIALS[tier])]}, "
                           f"{KIND_PHRASES[kind][pick % len(KIND_PHRASES[kind])]}.")
            if model % 2:
                description += f" {LINE_PHRASES[pick % len(LINE_PHRASES)].capitalize()}."
            price = round(BASE_PRICE * TIER_PRICE[tier] * (1.0 + 0.1 * (model % 5)), 2)
            rows.append((f"{category}-{j:03d}", None if j % 211 == 210 else name,
                         None if j % 97 == 96 else description, category, price))
    return pd.DataFrame(rows, columns=["sku", "product_name", "product_description", "category_name", "list_price"])


def _rng(sim) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([sim.params.gen.seed, sim.partition, TEXT_STREAM]))


def loyalty(sim) -> np.ndarray:
    """Per user: -logit(dropout probability), centred near 0 for the default Beta(0.8, 3)."""
    p = sim.p_drop
    return -(np.log(p) - np.log1p(-p)) - 1.5


def spend_score(sim) -> np.ndarray:
    """Per user: log of the mean spend per order relative to the population mean (Gamma-Gamma)."""
    g = sim.params.gen
    return np.log(g.gg_p / sim.nu) - np.log(g.gg_p * g.gg_gamma / (g.gg_q - 1.0))


def _draws(sim, products_per_category: int) -> tuple[np.ndarray, pd.DataFrame]:
    """(product code per purchase, review draws): both from the text seed stream, in a fixed order."""
    rng = _rng(sim)
    det = sim.order_details()
    user = det["user"].to_numpy()
    n = user.size
    z = spend_score(sim)[user] * 1.5
    weights = np.exp(np.stack([-z, np.zeros(n), z], axis=1))
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    tier = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 2)
    kind = (rng.random(n) < 1.0 / (1.0 + np.exp(-1.5 * loyalty(sim)[user]))).astype(int)
    models = max(1, products_per_category // PRODUCTS_PER_KIND_TIER)
    model = (rng.zipf(1.6, n) - 1) % models
    reviewed = rng.random(n) < REVIEW_SHARE
    delay = rng.uniform(1.0, 10.0, n)
    satisfaction = loyalty(sim)[user] + rng.normal(0.0, 0.8, n)
    rating = np.clip(np.round(3.0 + 1.1 * satisfaction), 1, 5).astype(int)
    phrase = rng.integers(0, 3, n)
    no_text, no_rating = rng.random(n) < 0.05, rng.random(n) < 0.05
    if models >= 2:  # the maker line (odd models) follows the taste; drawn last, so the draws above keep their values
        maker = rng.random(n) < 1.0 / (1.0 + np.exp(-TASTE_LINE * sim.taste[user]))
        model = 2 * (model % (models // 2)) + maker.astype(int)
    product = PRODUCTS_PER_KIND_TIER * model + 3 * kind + tier
    reviews = pd.DataFrame({"i": np.arange(n), "reviewed": reviewed, "t": det["t"].to_numpy() + delay,
                            "rating": rating, "phrase": phrase, "no_text": no_text, "no_rating": no_rating})
    return product, reviews


def raw_order_products(sim) -> pd.DataFrame:
    """The product of each purchase in codes: user, seq, product (code within the order's category)."""
    from ulv_spark.synthetic.generator import PRODUCTS_PER_CATEGORY

    det = sim.order_details()
    product, _ = _draws(sim, PRODUCTS_PER_CATEGORY)
    return pd.DataFrame({"user": sim.user_index[det["user"].to_numpy()], "seq": det["seq"].to_numpy().astype(np.int32),
                         "category": det["category"].to_numpy().astype(np.int32),
                         "product": product.astype(np.int32)})


def raw_products(sim) -> pd.DataFrame:
    """The catalogue (partition 0 writes it; the others return no rows)."""
    from ulv_spark.synthetic.generator import PRODUCTS_PER_CATEGORY, category_names

    if sim.partition != 0:
        return catalogue([], 0)
    return catalogue(category_names(sim.params.gen.categories), PRODUCTS_PER_CATEGORY)


def raw_reviews(sim) -> pd.DataFrame:
    """Reviews in codes plus their text: user, category, product, reviewed_at, stars (NaN: none), review_text."""
    from ulv_spark.synthetic.generator import PRODUCTS_PER_CATEGORY, _timestamps, category_names

    det = sim.order_details()
    product, draws = _draws(sim, PRODUCTS_PER_CATEGORY)
    keep = draws["reviewed"].to_numpy() & (draws["t"].to_numpy() < sim.params.span_days)
    rows = draws[keep]
    idx = rows["i"].to_numpy()
    categories = category_names(sim.params.gen.categories)
    category = det["category"].to_numpy()[idx]
    code = product[idx]
    _, _, model = product_parts(code)
    texts: list[Optional[str]] = []
    for cat, m, stars, k, empty in zip(category, model, rows["rating"], rows["phrase"], rows["no_text"]):
        nouns = _nouns(categories[cat])
        texts.append(None if empty else f"{REVIEW_PHRASES[int(stars)][int(k)]} The {nouns[int(m) % len(nouns)]}.")
    stars = np.where(rows["no_rating"].to_numpy(), np.nan, rows["rating"].to_numpy().astype(float))
    return pd.DataFrame({"user": sim.user_index[det["user"].to_numpy()[idx]], "category": category.astype(np.int32),
                         "product": code.astype(np.int32), "reviewed_at": _timestamps(sim.params, rows["t"].to_numpy()),
                         "stars": stars, "review_text": texts})


def _sku(params, category_col: str = "category", product_col: str = "product"):
    from pyspark.sql import functions as F

    from ulv_spark.synthetic.generator import _name, category_names

    return F.concat(_name(category_names(params.gen.categories), category_col), F.lit("-"),
                    F.lpad(F.col(product_col).cast("string"), 3, "0"))


def finish_products(df, params):
    """Raw product catalogue. Grain: one row per product. Columns: sku, product_name,
    product_description (either may be null), category_name, list_price."""
    return df


def finish_reviews(df, params):
    """Raw reviews. Grain: one row per review. Columns: customer_id, product_sku, reviewed_at,
    stars (1-5, null for some), review_text (null for some)."""
    from ulv_spark.synthetic.generator import _user_id

    return df.select(_user_id().alias("customer_id"), _sku(params).alias("product_sku"), "reviewed_at", "stars",
                     "review_text")


TABLES = {
    "products": (raw_products, "sku string, product_name string, product_description string, category_name string, "
                               "list_price double", finish_products),
    "reviews": (raw_reviews, "user long, category int, product int, reviewed_at timestamp, stars double, "
                             "review_text string", finish_reviews),
}
ORDER_PRODUCTS = (raw_order_products, "user long, seq int, category int, product int")


def _simulated(spark, params, builder, schema: str):
    """`builder(Simulation)` over every partition as a Spark DataFrame (as generator.generated_table does)."""
    from ulv_spark.synthetic.generator import CHUNK_ROWS, Simulation

    def simulate(batches):
        for batch in batches:
            for part in batch["id"].tolist():
                frame = builder(Simulation(params, int(part)))
                for start in range(0, len(frame), CHUNK_ROWS):
                    yield frame.iloc[start:start + CHUNK_ROWS]

    return spark.range(0, params.gen.partitions, 1, params.gen.partitions).mapInPandas(simulate, schema)


def with_order_products(spark, params, orders):
    """The raw order log with the product of each order (product_sku; a cancellation has its order's)."""
    from pyspark.sql import functions as F

    from ulv_spark.synthetic.generator import _user_id

    coded = _simulated(spark, params, *ORDER_PRODUCTS)
    number = F.concat(_user_id(), F.lit("-"), F.lpad(F.col("seq").cast("string"), 4, "0"))
    products = coded.select(number.alias("_order"), _sku(params).alias("product_sku"))
    keyed = orders.withColumn("_order", F.regexp_replace(F.col("order_no"), "^C", ""))
    return keyed.join(products, on="_order", how="left").drop("_order")
