"""Synthetic buy-till-you-die order log with known truth, simulated per Spark partition.

Each partition simulates its own users with numpy from ``SeedSequence([seed, partition])``,
so the data is deterministic for (seed, partitions) and the work scales with the cluster.
Time is measured in days since ``start_date`` 00:00 UTC.

The model, per user:

* acquisition (first purchase) uniform over the period; purchase rate lambda ~ Gamma(r, alpha)
  per day; after every *repeat* purchase the user drops out with probability p ~ Beta(a, b)
  (BG/NBD: the first purchase is never fatal);
* spend per order ~ Gamma(gg_p, rate nu), nu ~ Gamma(gg_q, rate gg_gamma) (Gamma-Gamma);
  a share ``cancel_rate`` of orders is cancelled within a day (own row, negative amount);
* traits: price_sensitivity ~ Beta(2, 2); channel (app users buy more often); loyalty
  membership (more likely for frequent buyers); region (pure noise); category preferences;
* browsing: each purchase ends a session of product views and an add-to-cart; browse-only
  sessions arrive at rate ``browse_sessions_per_purchase * lambda`` while the user is active;
* campaigns: a wave every ``campaign_every_days`` (or exactly ``campaign_waves`` of them) sent
  at 08:00 UTC to every acquired user, arms assigned uniformly; arm k multiplies the purchase
  rate by ``1 + campaign_effect_scale * lift_k(traits)`` during the response window, and coupon
  arms discount the orders placed in it. Coupons teach waiting: for one more window-length after
  the response window (cut short by the next wave) a coupon multiplies the purchase rate by
  ``max(0.05, 1 - after_effect_scale * after_k * price_sensitivity)`` — more orders now, fewer
  later, so the long-term effect of a coupon is well below its short-term one for price-sensitive
  users (the after-effect of the newest wave sent before t acts unless a window does; the truth
  uses the same rule). With ``observed_outcomes`` the exposure file also
  carries what each exposure led to in its window (:func:`add_observed_outcomes`, in Spark).

The truth for as-of date D conditions on the user's latent parameters and all activity before
D (not on the hidden alive state): P(alive) from the time since the last activity, expected
purchases and spend in [D, D + H) averaged over the arms of future waves, and the effect of
each arm sent at D vs the control.
"""
from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from ulv_spark.config import GenerateConf

SEND_HOUR = 8                 # campaign waves are sent at 08:00 UTC
MIN_RATE = 1e-12              # Gamma(r < 1) draws can underflow to 0
CHUNK_ROWS = 100_000          # rows per pandas batch handed back to Spark
CATEGORY_NAMES = ("books", "music", "electronics", "fashion", "home", "beauty", "sports", "toys",
                  "garden", "grocery", "health", "auto")
CHANNELS = ("app", "email", "web")
REGIONS = ("north", "south", "east", "west", "central")
PRODUCTS_PER_CATEGORY = 500


def expit(x: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


@dataclass(frozen=True)
class ArmEffect:
    """Lift of the purchase rate in the response window: base + weights * traits; plus a discount."""

    base: float = 0.0
    price_sensitivity: float = 0.0  # per unit of price_sensitivity (0..1)
    app: float = 0.0                # for users whose channel is the app
    loyalty: float = 0.0            # for loyalty members
    discount: float = 0.0           # share of the order value given away on orders in the window
    # after the window (one window-length, up to the next wave): the rate drops by this per unit of
    # price_sensitivity (times generate.after_effect_scale), floored at AFTER_FLOOR of the normal rate
    after_price_sensitivity: float = 0.0

    def lift(self, price_sensitivity: np.ndarray, is_app: np.ndarray, is_loyal: np.ndarray) -> np.ndarray:
        return (self.base + self.price_sensitivity * price_sensitivity + self.app * is_app
                + self.loyalty * is_loyal)

    def after(self, price_sensitivity: np.ndarray, scale: float) -> np.ndarray:
        """Rate multiplier in the after period (1 = none)."""
        return np.maximum(AFTER_FLOOR, 1.0 - scale * self.after_price_sensitivity * price_sensitivity)


_SENT = -2  # a piece of the horizon inside the window of a hypothetical wave sent at d
AFTER_FLOOR = 0.05  # the after-effect never takes the purchase rate below 5 % of the normal rate

# Arms the generator knows. A coupon pays for its lift with a discount, so its effect on spend
# is negative for users who are not price sensitive: the uplift model has something to learn.
ARM_EFFECTS = {
    "control": ArmEffect(),
    "coupon_10": ArmEffect(base=0.05, price_sensitivity=1.5, discount=0.10, after_price_sensitivity=1.0),
    "coupon_20": ArmEffect(base=0.05, price_sensitivity=2.5, discount=0.20, after_price_sensitivity=1.5),
    "free_shipping": ArmEffect(base=0.10, price_sensitivity=0.3, app=0.6),
    "loyalty_points": ArmEffect(base=0.05, loyalty=0.6),
}


@dataclass(frozen=True)
class GeneratorParams:
    """One simulation: the ``generate`` conf section, the horizon and the as-of dates of the truth tables."""

    gen: GenerateConf = field(default_factory=GenerateConf)
    truth_dates: Optional[tuple[dt.date, ...]] = None  # None: gen.truth_dates
    horizon_days: int = 90

    def __post_init__(self):
        if self.truth_dates is None:
            object.__setattr__(self, "truth_dates", tuple(self.gen.truth_dates))
        gen = self.gen
        unknown = [a for a in gen.campaign_arms if a not in ARM_EFFECTS]
        if unknown:
            raise ValueError(f"campaign arm(s) {unknown} unknown to the generator (known: {sorted(ARM_EFFECTS)})")
        if gen.seed < 0:
            raise ValueError(f"seed must be >= 0, got {gen.seed}")
        for d in self.truth_dates:
            horizon_end = d + dt.timedelta(days=self.horizon_days)
            if not gen.start_date < d or horizon_end > gen.end_date + dt.timedelta(days=1):
                raise ValueError(f"truth date {d} needs start_date < D and D + {self.horizon_days} days <= "
                                 f"end_date + 1 day ({gen.start_date} .. {gen.end_date})")

    @classmethod
    def from_conf(cls, gen: GenerateConf, horizon_days: int,
                  extra_truth_dates: Sequence[dt.date] = ()) -> "GeneratorParams":
        """The simulation of a GenerateConf; extra truth dates are added only where they are valid."""
        dates = set(gen.truth_dates)
        last = gen.end_date + dt.timedelta(days=1) - dt.timedelta(days=horizon_days)
        dates |= {d for d in extra_truth_dates if gen.start_date < d <= last}
        return cls(gen, truth_dates=tuple(sorted(dates)), horizon_days=horizon_days)

    @property
    def span_days(self) -> int:
        """Length of the simulated period in days (end_date inclusive)."""
        return (self.gen.end_date - self.gen.start_date).days + 1

    def day(self, date: dt.date) -> float:
        """`date` 00:00 UTC in days since start_date."""
        return float((date - self.gen.start_date).days)

    def wave_days(self) -> np.ndarray:
        """Send times of the campaign waves inside the period, in days (08:00 UTC).

        Every ``campaign_every_days`` from ``first_campaign_date``: until the end of the period,
        or exactly ``campaign_waves`` of them when that is set (the conf checks they fit).
        """
        if not self.gen.campaign_every_days:
            return np.zeros(0)
        every = self.gen.campaign_every_days
        first = self.gen.first_campaign_date or self.gen.start_date + dt.timedelta(days=every)
        if self.gen.campaign_waves:
            starts = self.day(first) + every * np.arange(self.gen.campaign_waves, dtype=float)
        else:
            starts = np.arange(self.day(first), self.span_days, every, dtype=float)
        sends = starts + SEND_HOUR / 24.0
        return sends[sends < self.span_days]

    def wave_ids(self) -> list[str]:
        return [campaign_id(self.gen.start_date + dt.timedelta(days=int(w))) for w in self.wave_days()]


def campaign_id(date: dt.date) -> str:
    """Id of the campaign wave sent on `date` (also the hypothetical wave of truth_uplift)."""
    return f"promo_{date:%Y%m%d}"


def partition_users(users: int, partitions: int, partition: int) -> tuple[int, int]:
    """(global index of the partition's first user, number of users in the partition)."""
    base, extra = divmod(users, partitions)
    return partition * base + min(partition, extra), base + (1 if partition < extra else 0)


class Simulation:
    """The simulated users of one partition: latent parameters, traits, campaigns, purchases.

    Arrays are indexed by the partition's local user index; purchases are sorted by (user, time)
    and the first purchase of every user (acquisition, time t0) is included.
    """

    def __init__(self, params: GeneratorParams, partition: int):
        self.params = params
        self.partition = partition
        self.first_user, self.n = partition_users(params.gen.users, params.gen.partitions, partition)
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([params.gen.seed, partition]).spawn(8)]
        self._rng_details, self._rng_cancel, self._rng_events = rngs[4], rngs[5], rngs[6]
        self._draw_users(rngs[0])
        self._assign_campaigns(rngs[1])
        self._simulate_purchases(rngs[2])
        self._simulate_browsing(rngs[3])
        self._details: Optional[pd.DataFrame] = None

    # ---------------------------------------------------------------- latent state and traits
    def _draw_users(self, rng: np.random.Generator) -> None:
        p, n = self.params, self.n
        self.user_index = self.first_user + np.arange(n, dtype=np.int64)
        self.t0 = rng.uniform(0.0, p.span_days, n)
        self.lam = np.maximum(rng.gamma(p.gen.r, 1.0 / p.gen.alpha, n), MIN_RATE)
        self.p_drop = np.clip(rng.beta(p.gen.a, p.gen.b, n), MIN_RATE, 1.0 - 1e-9)
        self.nu = rng.gamma(p.gen.gg_q, 1.0 / p.gen.gg_gamma, n)
        self.price_sensitivity = rng.beta(2.0, 2.0, n)
        # Traits tilt with the purchase rate, so attributes carry signal without changing
        # lambda's Gamma marginal (which the BG/NBD recovery test relies on).
        log_rel_rate = np.log(self.lam * p.gen.alpha / p.gen.r)
        self.is_app = rng.random(n) < expit(-1.0 + 0.7 * log_rel_rate)
        self.channel = np.where(self.is_app, 0, np.where(rng.random(n) < 0.6, 1, 2))
        self.is_loyal = rng.random(n) < expit(-1.2 + 0.8 * log_rel_rate)
        self.region = rng.integers(0, len(REGIONS), n)
        self.category_cdf = np.cumsum(rng.dirichlet(np.full(p.gen.categories, 0.5), n), axis=1)
        # generate.texts: a latent taste that only the product words reveal (synthetic/text.py) shifts the
        # dropout probability and the spend scale; its own seed stream, so nothing above moves
        self.taste = np.zeros(n)
        if p.gen.texts:
            self.taste = _text.draw_taste(p.gen.seed, self.partition, n)
            self.p_drop, self.nu = _text.apply_taste(self.p_drop, self.nu, self.taste)

    def _assign_campaigns(self, rng: np.random.Generator) -> None:
        p = self.params
        self.waves = p.wave_days()
        self.arms = list(p.gen.campaign_arms)
        effects = [ARM_EFFECTS[a] for a in self.arms]
        self.arm_mult = np.stack([1.0 + p.gen.campaign_effect_scale * e.lift(self.price_sensitivity, self.is_app,
                                                                         self.is_loyal) for e in effects], axis=1)
        self.arm_discount = np.array([e.discount for e in effects])
        self.arm_after = np.stack([e.after(self.price_sensitivity, p.gen.after_effect_scale) for e in effects], axis=1)
        assign = rng.integers(0, len(self.arms), (self.n, self.waves.size))
        self.assign = np.where(self.t0[:, None] < self.waves[None, :], assign, -1)
        rows = np.arange(self.n)[:, None]
        eligible = self.assign >= 0
        self.wave_mult = np.where(eligible, self.arm_mult[rows, np.maximum(self.assign, 0)], 1.0)
        self.wave_discount = np.where(eligible, self.arm_discount[np.maximum(self.assign, 0)], 0.0)
        self.wave_after = np.where(eligible, self.arm_after[rows, np.maximum(self.assign, 0)], 1.0)

    def wave_at(self, t: np.ndarray) -> np.ndarray:
        """Index of the wave whose response window contains time t, else -1."""
        if self.waves.size == 0:
            return np.full(t.shape, -1)
        every, window = self.params.gen.campaign_every_days, self.params.gen.response_window_days
        w = np.floor((t - self.waves[0]) / every).astype(np.int64)
        inside = (w >= 0) & (w < self.waves.size)
        w_safe = np.clip(w, 0, self.waves.size - 1)
        inside &= (t - self.waves[w_safe]) < window
        return np.where(inside, w_safe, -1)

    def after_at(self, t: np.ndarray) -> np.ndarray:
        """Index of the newest wave sent at or before t whose after period [send + window, send +
        2 window) contains t, else -1 (a later wave's send ends it: that wave is then the newest)."""
        if self.waves.size == 0:
            return np.full(t.shape, -1)
        every, window = self.params.gen.campaign_every_days, self.params.gen.response_window_days
        w = np.clip(np.floor((t - self.waves[0]) / every).astype(np.int64), 0, self.waves.size - 1)
        since = t - self.waves[w]
        return np.where((t >= self.waves[0]) & (since >= window) & (since < 2 * window), w, -1)

    def multiplier_at(self, users: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rate multiplier, discount) of `users` at times `t` under their actual campaign arms."""
        if self.waves.size == 0:
            return np.ones(t.shape), np.zeros(t.shape)
        w = self.wave_at(t)
        hit = w >= 0
        w_safe = np.maximum(w, 0)
        a = self.after_at(t)
        after = np.where(a >= 0, self.wave_after[users, np.maximum(a, 0)], 1.0)
        return (np.where(hit, self.wave_mult[users, w_safe], after),
                np.where(hit, self.wave_discount[users, w_safe], 0.0))

    # ---------------------------------------------------------------- purchases and browsing
    def _simulate_purchases(self, rng: np.random.Generator) -> None:
        """Inhomogeneous Poisson purchases by thinning; dropout after each repeat purchase."""
        span = self.params.span_days
        m_max = self.wave_mult.max(axis=1) if self.waves.size else np.ones(self.n)
        rate = self.lam * m_max
        users, times = [np.arange(self.n)], [self.t0]
        self.death_t = np.full(self.n, np.inf)
        active = np.arange(self.n)
        t = self.t0.copy()
        while active.size:
            t_next = t[active] + rng.exponential(1.0, active.size) / rate[active]
            keep = t_next < span
            active, t_next = active[keep], t_next[keep]
            if not active.size:
                break
            t[active] = t_next
            mult, _ = self.multiplier_at(active, t_next)
            accepted = rng.random(active.size) * m_max[active] < mult
            buyers = active[accepted]
            users.append(buyers)
            times.append(t_next[accepted])
            dies = rng.random(buyers.size) < self.p_drop[buyers]
            self.death_t[buyers[dies]] = t_next[accepted][dies]
            dead = np.zeros(active.size, dtype=bool)
            dead[np.flatnonzero(accepted)[dies]] = True
            active = active[~dead]
        user = np.concatenate(users)
        time = np.concatenate(times)
        order = np.lexsort((time, user))
        self.p_user, self.p_t = user[order], time[order]
        starts = np.searchsorted(self.p_user, np.arange(self.n))
        self.p_seq = np.arange(self.p_user.size) - starts[self.p_user]  # 0 = first purchase

    def _simulate_browsing(self, rng: np.random.Generator) -> None:
        """Browse-only sessions: Poisson(beta * lambda) on (t0, end of activity)."""
        active_end = np.minimum(self.death_t, self.params.span_days)
        duration = active_end - self.t0
        counts = rng.poisson(self.params.gen.browse_sessions_per_purchase * self.lam * duration)
        user = np.repeat(np.arange(self.n), counts)
        time = self.t0[user] + rng.random(user.size) * duration[user]
        order = np.lexsort((time, user))
        self.b_user, self.b_t = user[order], time[order]

    # ---------------------------------------------------------------- order details
    def order_details(self) -> pd.DataFrame:
        """One row per purchase (sorted by user, time): user, t, seq, amount, discount, quantity,
        category, and its cancellation time (NaN when not cancelled or after the period)."""
        if self._details is not None:
            return self._details
        rng, p = self._rng_details, self.params
        user, t = self.p_user, self.p_t
        gross = rng.gamma(p.gen.gg_p, 1.0 / self.nu[user])
        _, discount_rate = self.multiplier_at(user, t)
        discount = np.round(gross * discount_rate, 2)
        amount = np.round(gross, 2) - discount
        quantity = 1 + rng.poisson(0.8, user.size)
        category = (rng.random(user.size)[:, None] > self.category_cdf[user]).sum(axis=1)
        category = np.minimum(category, p.gen.categories - 1)
        crng = self._rng_cancel
        cancelled = crng.random(user.size) < p.gen.cancel_rate
        cancel_t = t + crng.uniform(0.02, 1.0, user.size)
        cancel_t = np.where(cancelled & (cancel_t < p.span_days), cancel_t, np.nan)
        self._details = pd.DataFrame({"user": user, "t": t, "seq": self.p_seq, "amount": amount,
                                      "discount": discount, "quantity": quantity, "category": category,
                                      "cancel_t": cancel_t})
        return self._details

    # ---------------------------------------------------------------- truth
    def truth(self, d: float, horizon_days: float) -> dict[str, np.ndarray]:
        """Truth at time d (days) for the users acquired before d.

        Returns arrays over those users: ``user`` (local index), ``p_alive``,
        ``expected_purchases``, ``expected_spend`` (orders placed in [d, d + horizon)),
        ``is_alive``, and per arm ``conversion:<arm>`` / ``value:<arm>``: P(purchase) and expected
        net spend in [d, d + response_window) if that arm were sent at d with no other campaign.
        """
        p = self.params
        users = np.flatnonzero(self.t0 < d)
        lam, drop = self.lam[users], self.p_drop[users]
        before = self.p_t < d
        n_before = np.bincount(self.p_user[before], minlength=self.n)[users]
        last_buy = np.full(self.n, -np.inf)
        np.maximum.at(last_buy, self.p_user[before], self.p_t[before])
        last_buy = last_buy[users]
        last_browse = np.full(self.n, -np.inf)
        b_before = self.b_t < d
        np.maximum.at(last_browse, self.b_user[b_before], self.b_t[b_before])
        last_browse = last_browse[users]

        # Active for sure after no repeat purchase (the first is never fatal) or when browsing
        # followed the last purchase; otherwise weigh "last purchase was fatal" (p) against
        # "survived it and stayed quiet since" ((1 - p) * P(no purchase, no browse)).
        quiet = lam * (self._integrated_multiplier(users, last_buy, d)
                       + p.gen.browse_sessions_per_purchase * (d - last_buy))
        logit_dead = np.log(drop) - np.log1p(-drop) + quiet
        p_alive = np.where((n_before <= 1) | (last_browse > last_buy), 1.0, expit(-logit_dead))

        mean_order = p.gen.gg_p / self.nu[users] * (1.0 - p.gen.cancel_rate)
        purchases, spend = self._horizon_expectation(users, d, float(horizon_days))
        out = {"user": users, "p_alive": p_alive, "expected_purchases": p_alive * purchases,
               "expected_spend": p_alive * spend * mean_order, "is_alive": self.death_t[users] > d}
        window = float(p.gen.response_window_days)
        for k, arm in enumerate(self.arms):
            rate = lam * self.arm_mult[users, k]
            out[f"conversion:{arm}"] = p_alive * -np.expm1(-rate * window)
            out[f"value:{arm}"] = (p_alive * mean_order * (1.0 - self.arm_discount[k])
                                   * -np.expm1(-drop * rate * window) / drop)
            # long term: the whole horizon with the arm sent at d (later waves as in expected_spend)
            out[f"value_long:{arm}"] = p_alive * mean_order * self._horizon_expectation(
                users, d, float(horizon_days), sent=k)[1]
        return out

    def _integrated_multiplier(self, users: np.ndarray, since: np.ndarray, d: float) -> np.ndarray:
        """Integral over (since, d) of the actual campaign rate multiplier of each user."""
        total = d - since
        if self.waves.size:
            window = self.params.gen.response_window_days
            ends = self.waves + window
            overlap = np.clip(np.minimum(ends[None, :], d) - np.maximum(self.waves[None, :], since[:, None]), 0, None)
            total = total + ((self.wave_mult[users] - 1.0) * overlap).sum(axis=1)
            # after periods: [send + window, min(send + 2 window, next send))
            nxt = np.append(self.waves[1:], np.inf)
            a_end = np.minimum(self.waves + 2 * window, nxt)
            overlap = np.clip(np.minimum(a_end[None, :], d) - np.maximum(ends[None, :], since[:, None]), 0, None)
            total = total + ((self.wave_after[users] - 1.0) * overlap).sum(axis=1)
        return total

    def _horizon_expectation(self, users: np.ndarray, d: float, horizon: float,
                             sent: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """E[purchases], E[sum of (1 - discount)] over [d, d + horizon) given active at d.

        The rate is piecewise constant (campaign windows), so with Lambda_j the integrated rate of
        piece j, E[N] = sum_j exp(-p Lambda_<j) (1 - exp(-p Lambda_j)) / p; waves sent in the
        horizon have not been assigned yet, so every arm combination is weighed equally.
        ``sent``: arm index of a hypothetical wave sent at d (it replaces the real waves sent in
        [d, d + window), and is the newest wave from d on, so its window and after period act first):
        the long-term truth of sending that arm. A piece's rate is that of the newest wave sent
        before it: its window, else its after period, else the normal rate, as in the simulation.
        """
        window = self.params.gen.response_window_days
        # the waves in effect: with `sent`, a hypothetical wave at d replaces the real waves sent in
        # [d, d + window) (their windows and after periods); id = wave index or _SENT
        waves = [(float(w), k) for k, w in enumerate(self.waves)
                 if sent is None or not (d <= w < d + window)]
        if sent is not None:
            waves = sorted(waves + [(d, _SENT)])
        sends = np.array([w for w, _ in waves])
        edges = {d, d + horizon}
        for w, _ in waves:
            edges |= {x for x in (w, w + window, w + 2 * window) if d < x < d + horizon}
        edges = sorted(edges)
        pieces = []  # (length, kind "window" | "after" | None, wave id)
        for lo, hi in zip(edges[:-1], edges[1:]):
            mid = (lo + hi) / 2.0
            newest = int(np.searchsorted(sends, mid, side="right")) - 1   # newest wave sent before mid
            kind, wid = None, -1
            if newest >= 0:
                since, wid = mid - waves[newest][0], waves[newest][1]
                kind = "window" if since < window else "after" if since < 2 * window else None
            pieces.append((hi - lo, kind, wid))
        future = sorted({w for _, kind, w in pieces if kind and w >= 0 and self.waves[w] >= d})
        lam, drop = self.lam[users], self.p_drop[users]
        combos = list(itertools.product(range(len(self.arms)), repeat=len(future)))
        purchases = np.zeros(users.size)
        spend = np.zeros(users.size)
        for combo in combos:
            arm_of = dict(zip(future, combo))
            integrated = np.zeros(users.size)
            for length, kind, w in pieces:
                arm = sent if w == _SENT else arm_of.get(w)   # None: a past wave, its actual arm
                if kind is None:
                    mult, disc = 1.0, 0.0
                elif kind == "window":
                    if arm is None:
                        mult, disc = self.wave_mult[users, w], self.wave_discount[users, w]
                    else:
                        mult, disc = self.arm_mult[users, arm], self.arm_discount[arm]
                else:
                    mult, disc = (self.wave_after[users, w] if arm is None else self.arm_after[users, arm]), 0.0
                piece = lam * mult * length
                expected = np.exp(-drop * integrated) * -np.expm1(-drop * piece) / drop
                purchases += expected / len(combos)
                spend += (1.0 - disc) * expected / len(combos)
                integrated = integrated + piece
        return purchases, spend


# -------------------------------------------------------------------- raw tables
# The pandas builders return numeric codes (user index, sequence numbers, category codes) and
# the Spark finishers turn them into the text a shop would export: formatting millions of ids
# is cheap in the JVM and slow in Python.
USER_ID_FORMAT = "u%08d"


def user_id(index: int) -> str:
    """The customer id of the user with global index `index` (as the finishers write it)."""
    return USER_ID_FORMAT % index


def category_names(k: int) -> list[str]:
    return [CATEGORY_NAMES[i] if i < len(CATEGORY_NAMES) else f"category_{i + 1:02d}" for i in range(k)]


def _timestamps(params: GeneratorParams, t: np.ndarray) -> pd.Series:
    micros = np.round(np.asarray(t, dtype=float) * 86_400_000_000).astype(np.int64)
    stamps = np.datetime64(params.gen.start_date, "us") + micros.astype("timedelta64[us]")
    return pd.Series(pd.to_datetime(stamps)).dt.tz_localize("UTC")


def raw_orders(sim: Simulation) -> pd.DataFrame:
    """The order log in codes: one row per order or cancellation (see finish_orders)."""
    det = sim.order_details()
    base = pd.DataFrame({
        "user": sim.user_index[det["user"].to_numpy()], "seq": det["seq"].to_numpy().astype(np.int32),
        "t": det["t"].to_numpy(), "order_total": det["amount"].to_numpy(),
        "items": det["quantity"].to_numpy().astype(np.int32), "category": det["category"].to_numpy().astype(np.int32),
        "discount_total": det["discount"].to_numpy(), "is_cancellation": False})
    cancel = det["cancel_t"].notna().to_numpy()
    cancels = base[cancel].assign(
        t=det["cancel_t"].to_numpy()[cancel], order_total=lambda f: -f["order_total"], items=lambda f: -f["items"],
        discount_total=lambda f: -f["discount_total"], is_cancellation=True)
    out = pd.concat([base, cancels], ignore_index=True)
    out.insert(2, "ordered_at", _timestamps(sim.params, out["t"].to_numpy()))
    return out.drop(columns="t")


EVENT_TYPES = ("view", "add_to_cart", "search")


def raw_events(sim: Simulation) -> pd.DataFrame:
    """Behaviour events in codes: views + add_to_cart before each purchase, browse-only
    sessions, searches opening 30% of sessions (see finish_events). Only events inside the
    simulated period and before the user drops out are kept; rows are sorted by (user, time)."""
    rng, p = sim._rng_events, sim.params
    det = sim.order_details()
    minute = 1.0 / 1440.0
    view, cart, search_type = 0, 1, 2
    # purchase sessions: views, then add_to_cart 1-5 minutes before the purchase
    buy_user, buy_t, buy_cat = det["user"].to_numpy(), det["t"].to_numpy(), det["category"].to_numpy()
    cart_t = buy_t - rng.uniform(1, 5, buy_t.size) * minute
    n_views = 1 + rng.poisson(p.gen.views_per_purchase - 1.0, buy_t.size)
    v_sess = np.repeat(np.arange(buy_t.size), n_views)
    v_t = cart_t[v_sess] - rng.uniform(0.5, 40, v_sess.size) * minute
    v_cat = np.where(rng.random(v_sess.size) < 0.7, buy_cat[v_sess], _pick_category(sim, buy_user[v_sess], rng))
    # browse-only sessions: views a few minutes apart, sometimes an abandoned cart
    b_views = 1 + rng.poisson(1.5, sim.b_t.size)
    bv_sess = np.repeat(np.arange(sim.b_t.size), b_views)
    b_cat = _pick_category(sim, sim.b_user, rng)
    bv_t = sim.b_t[bv_sess] + _cumsum_within(rng.uniform(0.5, 4, bv_sess.size) * minute, bv_sess)
    bv_cat = np.where(rng.random(bv_sess.size) < 0.8, b_cat[bv_sess], _pick_category(sim, sim.b_user[bv_sess], rng))
    b_last = np.full(sim.b_t.size, -np.inf)
    np.maximum.at(b_last, bv_sess, bv_t)
    b_cart = rng.random(sim.b_t.size) < 0.1
    # sessions 0..n_buy-1 end in a purchase, n_buy.. are browse-only
    n_buy = buy_t.size
    first_view = np.minimum.reduceat(v_t, np.r_[0, np.cumsum(n_views)[:-1]]) if n_buy else np.zeros(0)
    s_start = np.concatenate([first_view, sim.b_t])
    s_user = np.concatenate([buy_user, sim.b_user])
    s_cat = np.concatenate([buy_cat, b_cat])
    searched = rng.random(s_user.size) < 0.3
    parts = [
        (buy_user[v_sess], v_t, view, v_cat, v_sess),
        (buy_user, cart_t, cart, buy_cat, np.arange(n_buy)),
        (sim.b_user[bv_sess], bv_t, view, bv_cat, n_buy + bv_sess),
        (sim.b_user[b_cart], b_last[b_cart] + rng.uniform(0.5, 3, int(b_cart.sum())) * minute, cart,
         b_cat[b_cart], n_buy + np.flatnonzero(b_cart)),
        (s_user[searched], s_start[searched] - rng.uniform(0.2, 2, int(searched.sum())) * minute, search_type,
         s_cat[searched], np.flatnonzero(searched)),
    ]
    user = np.concatenate([x[0] for x in parts])
    t = np.concatenate([x[1] for x in parts])
    kind = np.concatenate([np.full(x[0].size, x[2], dtype=np.int8) for x in parts])
    cat = np.concatenate([x[3] for x in parts])
    sess = np.concatenate([x[4] for x in parts])
    # a browse session that overlaps the fatal purchase ends with it
    inside = (t >= 0) & (t < p.span_days) & (t <= sim.death_t[user])
    user, t, kind, cat, sess = user[inside], t[inside], kind[inside], cat[inside], sess[inside]
    order = np.lexsort((kind, t, user))
    user, t, kind, cat, sess = user[order], t[order], kind[order], cat[order], sess[order]
    # sessions are numbered per user in order of their start
    s_order = np.lexsort((s_start, s_user))
    s_rank = np.empty(s_user.size, dtype=np.int64)
    s_rank[s_order] = np.arange(s_user.size) - np.searchsorted(s_user[s_order], s_user[s_order])
    product = rng.zipf(1.6, user.size) % PRODUCTS_PER_CATEGORY
    return pd.DataFrame({
        "user": sim.user_index[user],
        "seq": (np.arange(user.size) - np.searchsorted(user, user)).astype(np.int32),
        "event_time": _timestamps(p, t),
        "event_type": kind.astype(np.int32),
        "product": np.where(kind == search_type, -1, product).astype(np.int32),
        "category": cat.astype(np.int32),
        "session": s_rank[sess].astype(np.int32),
    })


def _pick_category(sim: Simulation, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picked = (rng.random(users.size)[:, None] > sim.category_cdf[users]).sum(axis=1)
    return np.minimum(picked, sim.params.gen.categories - 1)


def _cumsum_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting at each new value of the sorted `groups`."""
    if not values.size:
        return values
    total = np.cumsum(values)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    offset = np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, values.size]))
    return total - offset


def raw_exposures(sim: Simulation) -> pd.DataFrame:
    """Campaign exposures in codes: one row per (user, wave) for users acquired before the wave."""
    users, waves = np.nonzero(sim.assign >= 0)
    return pd.DataFrame({
        "user": sim.user_index[users], "wave": waves.astype(np.int32),
        "arm": sim.assign[users, waves].astype(np.int32), "sent_at": _timestamps(sim.params, sim.waves[waves]),
        "window_days": np.full(users.size, sim.params.gen.response_window_days, dtype=np.int32)})


def raw_user_attributes(sim: Simulation) -> pd.DataFrame:
    """CRM attributes in codes: user, price_sensitivity, channel, region, loyalty_member."""
    return pd.DataFrame({
        "user": sim.user_index, "price_sensitivity": np.round(sim.price_sensitivity, 3),
        "channel": sim.channel.astype(np.int32), "region": sim.region.astype(np.int32),
        "loyalty_member": sim.is_loyal})


def truth_users_frame(sim: Simulation) -> pd.DataFrame:
    """truth_users rows (user as index) for every truth date (see catalog.TRUTH_USERS)."""
    p = sim.params
    frames = []
    for date in p.truth_dates:
        truth = sim.truth(p.day(date), p.horizon_days)
        frames.append(pd.DataFrame({
            "user": sim.user_index[truth["user"]], "as_of_date": date, "horizon_days": np.int32(p.horizon_days),
            "p_alive": truth["p_alive"], "expected_purchases": truth["expected_purchases"],
            "expected_spend": truth["expected_spend"], "is_alive": truth["is_alive"]}))
    return pd.concat(frames, ignore_index=True)


def truth_uplift_frame(sim: Simulation) -> pd.DataFrame:
    """truth_uplift rows (user as index) for every truth date and non-control arm."""
    p = sim.params
    frames = []
    for date in p.truth_dates:
        truth = sim.truth(p.day(date), p.horizon_days)
        for arm in sim.arms:
            if arm == "control":
                continue
            frames.append(pd.DataFrame({
                "user": sim.user_index[truth["user"]], "as_of_date": date, "campaign_id": campaign_id(date),
                "arm": arm, "true_uplift_conversion": truth[f"conversion:{arm}"] - truth["conversion:control"],
                "true_uplift_value": truth[f"value:{arm}"] - truth["value:control"],
                "true_uplift_value_long": truth[f"value_long:{arm}"] - truth["value_long:control"],
                "response_window_days": np.int32(p.gen.response_window_days)}))
    return pd.concat(frames, ignore_index=True)


# -------------------------------------------------------------------- Spark
def _user_id(column: str = "user"):
    from pyspark.sql import functions as F

    return F.format_string(USER_ID_FORMAT, F.col(column))


def _name(codes: Sequence[str], column: str):
    """The name of code `column` in `codes` (0-based)."""
    from pyspark.sql import functions as F

    return F.element_at(F.array(*[F.lit(c) for c in codes]), F.col(column) + 1)


def finish_orders(df, params: GeneratorParams):
    """Raw order log as text. Grain: one row per order or cancellation.

    Columns: customer_id, order_no (<customer>-<nnnn>; cancellations 'C' + the order's number),
    ordered_at (ISO text, seconds), order_total (net of discount; negative for cancellations),
    items, main_category, discount_total, is_cancellation.
    """
    from pyspark.sql import functions as F

    number = F.concat(_user_id(), F.lit("-"), F.lpad(F.col("seq").cast("string"), 4, "0"))
    return df.select(
        _user_id().alias("customer_id"),
        F.when(F.col("is_cancellation"), F.concat(F.lit("C"), number)).otherwise(number).alias("order_no"),
        F.date_format("ordered_at", "yyyy-MM-dd'T'HH:mm:ss").alias("ordered_at"),
        "order_total", "items", _name(category_names(params.gen.categories), "category").alias("main_category"),
        "discount_total", "is_cancellation")


def finish_events(df, params: GeneratorParams):
    """Raw behaviour events. Grain: one row per event.

    Columns: event_uid, customer_id, event_time, event_name (view / add_to_cart / search),
    product_sku (<category>-<nnn>; null for searches), product_category, session_key.
    """
    from pyspark.sql import functions as F

    category = _name(category_names(params.gen.categories), "category")
    product = F.concat(category, F.lit("-"), F.lpad(F.col("product").cast("string"), 3, "0"))
    return df.select(
        F.concat(_user_id(), F.lit("-e"), F.lpad(F.col("seq").cast("string"), 5, "0")).alias("event_uid"),
        _user_id().alias("customer_id"), "event_time",
        _name(EVENT_TYPES, "event_type").alias("event_name"),
        F.when(F.col("product") >= 0, product).alias("product_sku"),
        category.alias("product_category"),
        F.concat(_user_id(), F.lit("-s"), F.lpad(F.col("session").cast("string"), 4, "0")).alias("session_key"))


def add_observed_outcomes(exposures, orders):
    """Coded exposures with the outcome each one had in its response window, from the order log.

    Grain: one row per exposure (user, wave), as ``exposures``. The window is
    [sent_at, sent_at + window_days); an order counts when its time in the order log (whole
    seconds, as ``finish_orders`` writes it) lies inside. The definitions are those a campaign
    tool reports and the features derive from orders when no outcome is observed: converted = a
    purchase (not a cancellation) in the window; spend = net order_total in the window
    (cancellations subtract), floored at 0, summed in cents so the total is independent of the
    order of the rows.

    Args:
        exposures: coded exposures (user, wave, arm, sent_at, window_days; see raw_exposures).
        orders: the coded order log (user, ordered_at, order_total, is_cancellation; see raw_orders).

    Returns:
        the columns of ``exposures``, converted BOOLEAN, spend DOUBLE.
    """
    from pyspark.sql import functions as F

    log = orders.select(F.col("user").alias("o_user"), F.date_trunc("second", "ordered_at").alias("o_ts"),
                        F.col("order_total").cast("decimal(18,2)").alias("o_total"), "is_cancellation")
    window_end = F.timestamp_add("DAY", F.col("window_days"), F.col("sent_at"))
    in_window = (F.col("o_user") == F.col("user")) & (F.col("o_ts") >= F.col("sent_at")) & (F.col("o_ts") < window_end)
    # (user, wave) is unique in the exposures, so grouping by all their columns keeps one row each
    outcome = (exposures.join(log, on=in_window, how="left")
               .groupBy(*exposures.columns)
               .agg(F.count(F.when(~F.col("is_cancellation"), F.lit(1))).alias("purchases"),
                    F.coalesce(F.sum("o_total"), F.lit(0).cast("decimal(18,2)")).alias("net")))
    return outcome.select(*exposures.columns, (F.col("purchases") > 0).alias("converted"),
                          F.greatest(F.col("net").cast("double"), F.lit(0.0)).alias("spend"))


def finish_exposures(df, params: GeneratorParams):
    """Raw campaign exposures. Grain: one row per (customer, campaign wave).

    Columns: customer_id, campaign (promo_<yyyymmdd>), variant (arm), sent_at, window_days; with
    ``generate.observed_outcomes`` also converted and spend (see :func:`add_observed_outcomes`,
    computed from the same simulated order log).
    """
    ids = params.wave_ids() or ["none"]
    columns = [_user_id().alias("customer_id"), _name(ids, "wave").alias("campaign"),
               _name(params.gen.campaign_arms, "arm").alias("variant"), "sent_at", "window_days"]
    if params.gen.observed_outcomes:
        df = add_observed_outcomes(df, coded_table(df.sparkSession, params, "orders"))
        columns += ["converted", "spend"]
    return df.select(*columns)


def finish_user_attributes(df, params: GeneratorParams):
    """Raw CRM attributes. Grain: one row per customer.

    Columns: customer_id, price_sensitivity (0..1), channel, region, loyalty_member.
    """
    return df.select(_user_id().alias("customer_id"), "price_sensitivity",
                     _name(CHANNELS, "channel").alias("channel"), _name(REGIONS, "region").alias("region"),
                     "loyalty_member")


def finish_truth(df, params: GeneratorParams):
    """Truth rows with the user index replaced by user_id (see TRUTH_USERS / TRUTH_UPLIFT)."""
    from pyspark.sql import functions as F

    return df.select(_user_id().alias("user_id"), *[F.col(c) for c in df.columns if c != "user"])


# table name -> (pandas builder, schema of its codes, Spark finisher): raw inputs named as the bronze
# tables they feed (catalog group bronze) and the truth tables (catalog group truth)
TABLES: dict[str, tuple[Callable, str, Callable]] = {
    "orders": (raw_orders, "user long, seq int, ordered_at timestamp, order_total double, items int, category int, "
                           "discount_total double, is_cancellation boolean", finish_orders),
    "events": (raw_events, "user long, seq int, event_time timestamp, event_type int, product int, category int, "
                           "session int", finish_events),
    "campaign_exposures": (raw_exposures, "user long, wave int, arm int, sent_at timestamp, window_days int",
                           finish_exposures),
    "user_attributes": (raw_user_attributes, "user long, price_sensitivity double, channel int, region int, "
                                             "loyalty_member boolean", finish_user_attributes),
    "truth_users": (truth_users_frame, "user long, as_of_date date, horizon_days int, p_alive double, "
                                       "expected_purchases double, expected_spend double, is_alive boolean",
                    finish_truth),
    "truth_uplift": (truth_uplift_frame, "user long, as_of_date date, campaign_id string, arm string, "
                                         "true_uplift_conversion double, true_uplift_value double, "
                                         "true_uplift_value_long double, response_window_days int", finish_truth),
}


# the text tables (products, reviews; generate.texts) are simulated in synthetic/text.py
from ulv_spark.synthetic import text as _text  # noqa: E402  (it uses the names above)

TABLES.update(_text.TABLES)


def partition_frames(params: GeneratorParams, table: str, partitions: Sequence[int]) -> Iterator[pd.DataFrame]:
    """The coded rows of `table` for the given partitions, in batches of at most CHUNK_ROWS."""
    builder = TABLES[table][0]
    for part in partitions:
        frame = builder(Simulation(params, int(part)))
        for start in range(0, len(frame), CHUNK_ROWS):
            yield frame.iloc[start:start + CHUNK_ROWS]


def coded_table(spark, params: GeneratorParams, table: str):
    """`table` in codes (the columns of its schema in TABLES): one task per partition simulates.

    Deterministic for (seed, partitions): partition j always simulates the same users from
    SeedSequence([seed, j]).
    """
    schema = TABLES[table][1]

    def simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield from partition_frames(params, table, batch["id"].tolist())

    return spark.range(0, params.gen.partitions, 1, params.gen.partitions).mapInPandas(simulate, schema)


def generated_table(spark, params: GeneratorParams, table: str):
    """`table` as a Spark DataFrame: one task per partition runs the numpy simulation.

    Grain and columns: see the finisher of `table` in TABLES. Deterministic for (seed,
    partitions): partition j always simulates the same users from SeedSequence([seed, j]).
    """
    return TABLES[table][2](coded_table(spark, params, table), params)
