"""The synthetic generator against its own ground truth and against lifetimes (numpy only, no Spark).

The statistical checks call the per-partition simulation directly. With a fixed seed they are
deterministic; the tolerances are what a correct generator meets for *any* seed with high
probability (about 4 standard errors), so a wrong formula, not bad luck, makes them fail.
"""
import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ulv_spark.config import GenerateConf
from ulv_spark.synthetic.generator import (GeneratorParams, Simulation, partition_users, raw_events,
                                           raw_exposures, raw_orders, truth_uplift_frame, truth_users_frame)

D = dt.date(2025, 10, 1)
H = 90


@pytest.fixture(scope="module")
def population():
    """60k users with the default campaigns, one partition."""
    params = GeneratorParams(GenerateConf(users=60_000, partitions=1, seed=11), truth_dates=(D,))
    return Simulation(params, 0)


def _z(diff: np.ndarray) -> float:
    """Mean of paired differences in standard errors."""
    return float(diff.mean() / (diff.std(ddof=1) / np.sqrt(diff.size)))


def test_partitions_split_users_exactly():
    bounds = [partition_users(10, 4, j) for j in range(4)]
    assert bounds == [(0, 3), (3, 3), (6, 2), (8, 2)]


def test_simulation_is_deterministic_for_seed_and_partition():
    params = GeneratorParams(GenerateConf(users=400, partitions=2, seed=3))
    a, b = Simulation(params, 1), Simulation(params, 1)
    for build in (raw_orders, raw_events, raw_exposures, truth_users_frame, truth_uplift_frame):
        assert build(a).equals(build(b)), build.__name__
    other = Simulation(params, 0)
    assert other.user_index[0] == 0 and a.user_index[0] == 200
    assert not np.array_equal(other.lam, a.lam)
    reseeded = Simulation(dataclasses.replace(params, gen=dataclasses.replace(params.gen, seed=4)), 1)
    assert not np.array_equal(reseeded.lam, a.lam)


def test_params_from_conf_validate_truth_dates_and_arms():
    params = GeneratorParams.from_conf(GenerateConf(), 90, extra_truth_dates=(dt.date(2025, 10, 3), dt.date(2025, 10, 4)))
    # the last as-of date whose horizon ends inside the period is 2025-10-03; later extras are dropped
    assert params.truth_dates == (dt.date(2025, 7, 3), D, dt.date(2025, 10, 3))
    with pytest.raises(ValueError, match="truth date 2025-12-01 needs"):
        GeneratorParams(truth_dates=(dt.date(2025, 12, 1),))
    with pytest.raises(ValueError, match=r"unknown to the generator"):
        GeneratorParams(GenerateConf(campaign_arms=["control", "sms_blast"]))


def test_raw_tables_are_consistent(population):
    sim = population
    orders = raw_orders(sim)
    purchases = orders[~orders["is_cancellation"]]
    cancels = orders[orders["is_cancellation"]]
    assert len(purchases) == sim.p_t.size
    # every user's first order is the acquisition, never in a campaign window, never discounted
    first = purchases[purchases["seq"] == 0]
    assert len(first) == sim.n and (first["discount_total"] == 0).all()
    # cancellations mirror an order of the same user and sequence number with negative values
    joined = cancels.merge(purchases, on=["user", "seq"], suffixes=("_c", ""))
    assert len(joined) == len(cancels) > 0
    assert np.allclose(joined["order_total_c"], -joined["order_total"])
    assert (joined["ordered_at_c"] > joined["ordered_at"]).all()
    assert 0.02 < len(cancels) / len(purchases) < 0.04  # cancel_rate 0.03
    # coupon orders carry a 10% discount
    discounted = purchases[purchases["discount_total"] > 0]
    ratio = discounted["discount_total"] / (discounted["order_total"] + discounted["discount_total"])
    assert len(discounted) > 100 and np.allclose(ratio, 0.10, atol=0.006)
    # exposures only for users acquired before the wave, arms balanced
    exposures = raw_exposures(sim)
    assert (sim.t0[exposures["user"].to_numpy()] < sim.waves[exposures["wave"].to_numpy()]).all()
    shares = exposures["arm"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.allclose(shares, 1 / 3, atol=0.01)


def test_browsing_is_linked_to_purchases(population):
    sim = population
    events = raw_events(sim)
    carts = events[events["event_type"] == 1]
    # every purchase is preceded by an add_to_cart (browse sessions add ~10% abandoned carts)
    assert sim.p_t.size <= len(carts) <= sim.p_t.size + 0.12 * sim.b_t.size + 1
    user = events["user"].to_numpy()
    assert (np.diff(user) >= 0).all()
    assert np.array_equal(events["seq"].to_numpy(), np.arange(user.size) - np.searchsorted(user, user))
    # nobody browses after dropping out
    last_event = events.groupby("user")["event_time"].max()
    death = sim.death_t[last_event.index.to_numpy() - sim.first_user]
    dead = np.isfinite(death)
    last_days = (last_event - pd.Timestamp("2024-01-01", tz="UTC")).dt.total_seconds().to_numpy() / 86400
    assert (last_days[dead] <= death[dead] + 1e-6).all()


def test_bgnbd_fit_recovers_the_true_parameters():
    """BG/NBD on the generated purchase histories recovers r, alpha, a, b.

    Campaigns are switched off so the data follow BG/NBD exactly. Tolerance: 4 standard errors
    of the maximum-likelihood estimate, taken from lifetimes' own Hessian (with 50k users about
    +-3% for r, alpha and +-12% for a, b); a correct simulator misses that with probability
    < 1e-3 per parameter, while e.g. allowing a dropout after the first purchase moves a and b
    by tens of standard errors.
    """
    from lifetimes import BetaGeoFitter

    params = GeneratorParams(GenerateConf(users=50_000, partitions=1, seed=5, campaign_every_days=0), truth_dates=())
    sim = Simulation(params, 0)
    end = float(params.span_days)
    frequency = np.bincount(sim.p_user, minlength=sim.n) - 1
    last = np.full(sim.n, -np.inf)
    np.maximum.at(last, sim.p_user, sim.p_t)
    fitter = BetaGeoFitter().fit(frequency, last - sim.t0, end - sim.t0)
    summary = fitter.summary
    for name, true in (("r", params.gen.r), ("alpha", params.gen.alpha), ("a", params.gen.a), ("b", params.gen.b)):
        estimate, se = summary.loc[name, "coef"], summary.loc[name, "se(coef)"]
        assert abs(estimate - true) <= 4 * se, (name, estimate, se, true)
        assert abs(estimate - true) <= 0.15 * true, (name, estimate, true)


def test_truth_expected_spend_matches_realised_spend(population):
    """Over >= 50k users the truth's expected spend (and purchases) in [D, D + H) equals the realised
    net spend on average: |mean(realised - truth)| <= 3 standard errors of the paired difference."""
    sim = population
    d = sim.params.day(D)
    truth = sim.truth(d, H)
    users = truth["user"]
    assert users.size >= 50_000
    orders = sim.order_details()
    in_horizon = ((orders["t"] >= d) & (orders["t"] < d + H)).to_numpy()
    net = np.where(orders["cancel_t"].isna(), orders["amount"], 0.0)
    owner = orders["user"].to_numpy()
    realised = np.bincount(owner[in_horizon], weights=net[in_horizon], minlength=sim.n)[users]
    purchases = np.bincount(owner[in_horizon], minlength=sim.n)[users]
    assert realised.mean() > 5.0
    assert abs(_z(realised - truth["expected_spend"])) <= 3.0
    assert abs(_z(purchases - truth["expected_purchases"])) <= 3.0


def test_truth_p_alive_is_calibrated(population):
    sim = population
    truth = sim.truth(sim.params.day(D), H)
    alive = truth["is_alive"].astype(float)
    assert abs(_z(alive - truth["p_alive"])) <= 3.0
    # calibrated in every band, not only on average
    bands = np.digitize(truth["p_alive"], [0.2, 0.4, 0.6, 0.8])
    for band in range(5):
        chosen = bands == band
        gap = abs(alive[chosen].mean() - truth["p_alive"][chosen].mean())
        assert gap <= 4 * np.sqrt(0.25 / chosen.sum()) + 1e-9, (band, gap)


def test_truth_uplift_matches_randomised_waves(population):
    """For real waves, P(convert) and spend in the window per arm match the truth computed at the
    send time (pooled over waves; 4 standard errors), and arms differ as the effects say."""
    sim = population
    window = sim.params.gen.response_window_days
    orders = sim.order_details()
    net = np.where(orders["cancel_t"].isna(), orders["amount"], 0.0)
    t, owner = orders["t"].to_numpy(), orders["user"].to_numpy()
    gaps = {arm: {"conv": [], "value": []} for arm in sim.arms}
    for w, sent in enumerate(sim.waves):
        if sent + window > sim.params.span_days or w < 4:
            continue
        truth = sim.truth(sent, H)
        users = truth["user"]
        arm_of = sim.assign[users, w]
        in_window = (t >= sent) & (t < sent + window)
        converted = np.bincount(owner[in_window], minlength=sim.n)[users] > 0
        value = np.bincount(owner[in_window], weights=net[in_window], minlength=sim.n)[users]
        for k, arm in enumerate(sim.arms):
            chosen = arm_of == k
            gaps[arm]["conv"].append(converted[chosen] - truth[f"conversion:{arm}"][chosen])
            gaps[arm]["value"].append(value[chosen] - truth[f"value:{arm}"][chosen])
    for arm, kinds in gaps.items():
        for kind, parts in kinds.items():
            assert abs(_z(np.concatenate(parts))) <= 4.0, (arm, kind)
    uplift = truth_uplift_frame(sim)
    mean = uplift.groupby("arm")["true_uplift_conversion"].mean()
    assert mean["coupon_10"] > mean["free_shipping"] > 0.01
    # a coupon gives money away: its spend uplift is negative for some price-insensitive users
    assert (uplift.loc[uplift["arm"] == "coupon_10", "true_uplift_value"] < 0).any()


def test_long_term_truth_is_the_window_truth_when_the_horizon_is_the_window_and_matches_real_waves(population):
    """value_long:<arm> = the window's value when H = the window (exactly), and over H days it
    matches the realised spend of the users each real wave sent that arm (4 standard errors)."""
    sim = population
    window = sim.params.gen.response_window_days
    short = sim.truth(sim.waves[5], window)
    for arm in sim.arms:
        np.testing.assert_allclose(short[f"value_long:{arm}"], short[f"value:{arm}"], rtol=1e-10, atol=1e-12)
    orders = sim.order_details()
    net = np.where(orders["cancel_t"].isna(), orders["amount"], 0.0)
    t, owner = orders["t"].to_numpy(), orders["user"].to_numpy()
    gaps = {arm: [] for arm in sim.arms}
    for w, sent in enumerate(sim.waves):
        if sent + H > sim.params.span_days or w < 4:
            continue
        truth = sim.truth(sent, H)
        users = truth["user"]
        arm_of = sim.assign[users, w]
        inside = (t >= sent) & (t < sent + H)
        spend = np.bincount(owner[inside], weights=net[inside], minlength=sim.n)[users]
        for k, arm in enumerate(sim.arms):
            gaps[arm].append(spend[arm_of == k] - truth[f"value_long:{arm}"][arm_of == k])
    assert all(parts for parts in gaps.values())
    for arm, parts in gaps.items():
        assert abs(_z(np.concatenate(parts))) <= 4.0, arm
    uplift = truth_uplift_frame(sim)
    assert uplift["true_uplift_value_long"].notna().all()
    assert not np.allclose(uplift["true_uplift_value_long"], uplift["true_uplift_value"])


def test_the_integrated_rate_multiplier_is_the_integral_of_the_rate_with_windows_and_after_periods(population):
    """_integrated_multiplier (P(alive)'s quiet time) equals the integral of multiplier_at, to the grid's error."""
    sim = population
    d = sim.params.day(D)
    users = np.arange(0, sim.n, 997)
    since = np.maximum(sim.t0[users], d - 200.0)
    grid = np.linspace(0.0, 1.0, 200_001)
    exact = sim._integrated_multiplier(users, since, d)
    for i, u in enumerate(users):
        t = since[i] + (d - since[i]) * grid
        mult, _ = sim.multiplier_at(np.full(t.size, u), t)
        numeric = np.trapezoid(mult, t) if hasattr(np, "trapezoid") else np.trapz(mult, t)
        assert numeric == pytest.approx(exact[i], abs=1e-3 * max(1.0, d - since[i])), u
    assert (sim.wave_after < 1).any() and (sim.wave_after <= 1).all()


def test_a_coupon_teaches_waiting_its_long_term_uplift_is_below_its_short_term_one_for_price_sensitive_users(population):
    sim = population
    uplift = truth_uplift_frame(sim).merge(
        pd.DataFrame({"user": sim.user_index, "ps": sim.price_sensitivity}), on="user")
    coupon = uplift[uplift["arm"] == "coupon_10"]
    sensitive = coupon[coupon["ps"] > 0.7]
    assert (sensitive["true_uplift_value_long"] < sensitive["true_uplift_value"]).mean() > 0.9
    shipping = uplift[uplift["arm"] == "free_shipping"]
    # no after-effect: over the horizon free shipping keeps (most of) its window effect
    assert shipping["true_uplift_value_long"].mean() > 0.5 * shipping["true_uplift_value"].mean()
    # after_effect_scale 0: no after periods at all
    plain = Simulation(GeneratorParams(GenerateConf(users=500, partitions=1, seed=11, after_effect_scale=0.0),
                                       truth_dates=(D,)), 0)
    assert (plain.wave_after == 1.0).all()


# ------------------------------------------------------------------ campaign_waves (a single campaign)
CAMPAIGN_DAY = dt.date(2025, 7, 3)


def _single_campaign(users: int = 400, **kw) -> GenerateConf:
    return GenerateConf(users=users, partitions=1, seed=3, campaign_waves=1, first_campaign_date=CAMPAIGN_DAY,
                        response_window_days=14, **kw)


def test_campaign_waves_sends_exactly_that_many_waves_from_the_first_date():
    one = GeneratorParams(_single_campaign())
    assert one.wave_ids() == ["promo_20250703"]
    assert one.wave_days().tolist() == [one.day(CAMPAIGN_DAY) + 8 / 24]   # 08:00 UTC on the day
    three = GeneratorParams(GenerateConf(campaign_waves=3, first_campaign_date=dt.date(2024, 5, 1),
                                         campaign_every_days=45))
    assert three.wave_ids() == ["promo_20240501", "promo_20240615", "promo_20240730"]
    # without campaign_waves the waves run every 60 days from start_date + 60 days to the end
    default = GeneratorParams(GenerateConf())
    assert default.wave_ids()[:2] == ["promo_20240301", "promo_20240430"] and len(default.wave_ids()) == 12
    assert default.wave_ids()[-1] == "promo_20251221"


def test_campaign_waves_equal_to_the_periodic_count_simulates_the_same_shop():
    """N = the number of periodic waves reproduces the default simulation exactly (same draws)."""
    default = GeneratorParams(GenerateConf(users=300, partitions=1, seed=3))
    explicit = GeneratorParams(GenerateConf(users=300, partitions=1, seed=3, campaign_waves=12))
    zero = GeneratorParams(GenerateConf(users=300, partitions=1, seed=3, campaign_waves=0))
    sims = [Simulation(p, 0) for p in (default, explicit, zero)]
    for build in (raw_orders, raw_events, raw_exposures, truth_users_frame, truth_uplift_frame):
        a, b, c = (build(sim) for sim in sims)   # once each: raw_events draws from the simulation's rng
        assert a.equals(b) and a.equals(c), build.__name__
    fewer = Simulation(GeneratorParams(GenerateConf(users=300, partitions=1, seed=3, campaign_waves=2)), 0)
    assert sorted(raw_exposures(fewer)["wave"].unique().tolist()) == [0, 1]


def test_campaign_waves_are_checked_in_the_conf():
    from ulv_spark.config import ConfigError

    with pytest.raises(ConfigError, match=r"'generate.campaign_waves' must be null, 0 or a number of waves >= 1, "
                                          r"got -1"):
        GenerateConf(campaign_waves=-1)
    with pytest.raises(ConfigError, match=r"'generate.campaign_waves' 3 wave\(s\) from 2025-11-01 every 60 days run "
                                          r"to 2026-03-01, outside the simulated period 2024-01-01 \.\. 2025-12-31"):
        GenerateConf(campaign_waves=3, first_campaign_date=dt.date(2025, 11, 1))
    with pytest.raises(ConfigError, match=r"'generate.campaign_waves' 1 wave\(s\) from 2023-12-01"):
        GenerateConf(campaign_waves=1, first_campaign_date=dt.date(2023, 12, 1))
    with pytest.raises(ConfigError, match=r"'generate.campaign_every_days' must be >= 1 when campaign_waves is set"):
        GenerateConf(campaign_waves=1, campaign_every_days=0)
    assert GenerateConf(campaign_waves=1, first_campaign_date=dt.date(2025, 12, 31)).campaign_waves == 1


def test_single_campaign_exposes_every_acquired_user_once_with_uniform_arms():
    """One wave: one exposure per user acquired before the send, arms uniform (4 standard errors),
    the 14-day window on every row, and the truth's campaign at the campaign day is that wave."""
    params = GeneratorParams.from_conf(_single_campaign(users=20_000), 90)
    sim = Simulation(params, 0)
    exposures = raw_exposures(sim)
    sent = params.day(CAMPAIGN_DAY) + 8 / 24
    acquired = np.flatnonzero(sim.t0 < sent)
    assert sorted(exposures["user"].tolist()) == acquired.tolist()
    assert set(exposures["wave"]) == {0} and set(exposures["window_days"]) == {14}
    assert set(exposures["sent_at"]) == {pd.Timestamp("2025-07-03 08:00", tz="UTC")}
    n = len(exposures)
    counts = exposures["arm"].value_counts().sort_index()
    assert counts.index.tolist() == [0, 1, 2]
    assert (abs(counts - n / 3) <= 4 * np.sqrt(n * (1 / 3) * (2 / 3))).all(), counts.tolist()
    # the purchase rate moves in the window only: coupon orders (10% off) fall inside it
    orders = raw_orders(sim)
    discounted = orders[(orders["discount_total"] > 0) & ~orders["is_cancellation"]]
    start = pd.Timestamp("2025-07-03 08:00", tz="UTC")
    assert len(discounted) > 50
    assert ((discounted["ordered_at"] >= start) & (discounted["ordered_at"] < start + pd.Timedelta(days=14))).all()
    uplift = truth_uplift_frame(sim)
    at_day = uplift[uplift["as_of_date"] == CAMPAIGN_DAY]
    assert set(at_day["campaign_id"]) == {"promo_20250703"} and set(at_day["response_window_days"]) == {14}
    assert sorted(at_day["arm"].unique()) == ["coupon_10", "free_shipping"]
    assert sorted(at_day.loc[at_day["arm"] == "coupon_10", "user"]) == np.flatnonzero(
        sim.t0 < params.day(CAMPAIGN_DAY)).tolist()
