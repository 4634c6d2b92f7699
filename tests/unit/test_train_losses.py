"""ZILN maths, masked-event targets and the TARNet loss, checked against scipy on hand-written inputs."""
import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from ulv_spark.train import losses
from ulv_spark.train.losses import (IGNORE_INDEX, MASK_ID, masked_event_loss, masked_mean, mask_tokens,
                                    multitask_loss, ziln_expected_value, ziln_nll, ziln_quantile)

LOGIT = np.array([-1.2, 0.0, 0.7, 2.5, -0.3])
MU = np.array([1.0, 2.0, 3.5, 0.2, 4.0])
SIGMA = np.array([0.5, 1.0, 0.8, 1.7, 0.3])
Y = np.array([0.0, 7.5, 0.0, 1.3, 60.0])


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_ziln_nll_matches_bernoulli_times_scipy_lognormal():
    p = _sigmoid(LOGIT)
    expected = np.where(Y > 0,
                        -np.log(p) - stats.lognorm.logpdf(np.where(Y > 0, Y, 1.0), s=SIGMA, scale=np.exp(MU)),
                        -np.log(1 - p))
    got = ziln_nll(_t(LOGIT), _t(MU), _t(SIGMA), _t(Y)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_ziln_expected_value_matches_scipy_lognormal_mean():
    expected = _sigmoid(LOGIT) * stats.lognorm.mean(s=SIGMA, scale=np.exp(MU))
    got = ziln_expected_value(_t(LOGIT), _t(MU), _t(SIGMA)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_ziln_quantile_inverts_the_mixture_cdf(q):
    # independent reference: solve (1 - p) + p * F_lognormal(y) = q numerically
    p = _sigmoid(LOGIT)
    expected = []
    for pi, m, s in zip(p, MU, SIGMA):
        if q <= 1 - pi:
            expected.append(0.0)
            continue
        cdf = lambda y: (1 - pi) + pi * stats.lognorm.cdf(y, s=s, scale=math.exp(m)) - q  # noqa: E731
        expected.append(optimize.brentq(cdf, 1e-12, 1e8, xtol=1e-12, rtol=1e-12))
    got = ziln_quantile(_t(LOGIT), _t(MU), _t(SIGMA), q).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-12)


def test_ziln_quantile_is_zero_below_the_no_purchase_mass():
    # p = 0.25: 75 % of the mass sits at 0, so the 10th and 50th percentiles are 0 and the 90th is not
    logit, mu, sigma = _t([math.log(0.25 / 0.75)]), _t([3.0]), _t([0.5])
    assert float(ziln_quantile(logit, mu, sigma, 0.5)) == 0.0
    p90 = float(ziln_quantile(logit, mu, sigma, 0.9))
    assert p90 == pytest.approx(stats.lognorm.ppf((0.9 - 0.75) / 0.25, s=0.5, scale=math.exp(3.0)), rel=1e-9)


def test_ziln_quantile_rejects_probabilities_outside_0_1():
    with pytest.raises(ValueError):
        ziln_quantile(_t([0.0]), _t([0.0]), _t([1.0]), 1.0)


def test_masked_mean_is_zero_not_nan_on_an_empty_selection():
    mean, n = masked_mean(torch.tensor([5.0, 7.0]), torch.tensor([False, False]))
    assert float(mean) == 0.0 and float(n) == 0.0
    mean, n = masked_mean(torch.tensor([5.0, 7.0, 9.0]), torch.tensor([True, False, True]))
    assert float(mean) == 7.0 and float(n) == 2.0


def test_mask_tokens_only_picks_real_events_and_labels_them():
    tokens = torch.tensor([[5, 6, 3, 0, 0], [2, 9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    gen = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(tokens, mask, vocab_size=20, probability=0.999999, generator=gen)
    eligible = torch.tensor([[True, True, False, False, False], [False, True, True, True, False]])
    # UNK (3), CLS (2) and padding are never targets; every eligible event is one at p ~ 1
    assert torch.equal(labels != IGNORE_INDEX, eligible)
    assert torch.equal(labels[eligible], tokens[eligible])
    assert torch.equal(inputs[~eligible], tokens[~eligible])


def test_mask_tokens_replaces_about_80_percent_with_mask():
    tokens = torch.randint(4, 50, (200, 50))
    mask = torch.ones_like(tokens)
    inputs, labels = mask_tokens(tokens, mask, vocab_size=50, probability=0.15, generator=torch.Generator().manual_seed(1))
    picked = labels != IGNORE_INDEX
    assert 0.13 < picked.float().mean() < 0.17
    share_masked = (inputs[picked] == MASK_ID).float().mean()
    assert 0.75 < share_masked < 0.85
    assert ((inputs[picked] >= 4) | (inputs[picked] == MASK_ID)).all()


def test_masked_event_loss_is_cross_entropy_over_picked_positions_and_zero_without_any():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1]])
    loss, n = masked_event_loss(logits, labels)
    expected = -math.log(math.exp(1.0) / (math.exp(0.0) + math.exp(1.0) + math.exp(0.0)))
    assert float(loss) == pytest.approx(expected) and float(n) == 1.0
    loss, n = masked_event_loss(logits.requires_grad_(), torch.full((1, 2), IGNORE_INDEX))
    assert float(loss.detach()) == 0.0 and float(n) == 0.0 and loss.requires_grad


def _heads(batch, arms=3, seed=0, arm_outputs=4):
    torch.manual_seed(seed)
    return {"value": torch.randn(batch, 3, requires_grad=True), "churn": torch.randn(batch, requires_grad=True),
            "arm": torch.randn(batch, arms, arm_outputs, requires_grad=True)}


def test_multitask_loss_trains_each_row_only_on_the_arm_it_received():
    out = _heads(3)
    batch = {"y_value": torch.tensor([0.0, 5.0, 2.0]), "y_churn": torch.tensor([1.0, 0.0, 0.0]),
             "arm_index": torch.tensor([1, -1, 1]), "y_converted": torch.tensor([1.0, 0.0, 0.0]),
             "y_response": torch.tensor([4.0, 0.0, 0.0])}
    total, parts = multitask_loss(out, batch, {"value": 0.0, "churn": 0.0})
    total.backward()
    grad = out["arm"].grad
    assert grad[:, [0, 2]].abs().sum() == 0          # arms nobody received get nothing
    assert grad[1].abs().sum() == 0                  # the unexposed row trains no arm head
    assert grad[0, 1].abs().sum() > 0 and grad[2, 1].abs().sum() > 0
    assert parts["uplift"][1] == 2.0 and parts["value"][1] == 3.0
    # the received arms' gradients are those of the mean TARNet loss over the two exposed rows alone
    own = out["arm"].detach()[[0, 2], 1].clone().requires_grad_()
    reference = (torch.nn.functional.binary_cross_entropy_with_logits(own[:, 0], torch.tensor([1.0, 0.0]), reduction="none")
                 + ziln_nll(own[:, 1], own[:, 2], losses.ziln_sigma(own[:, 3]), torch.tensor([4.0, 0.0]))).mean()
    reference.backward()
    torch.testing.assert_close(grad[[0, 2], 1], own.grad)


def test_multitask_loss_parts_match_their_definitions():
    out = _heads(2, arms=2, seed=1)
    batch = {"y_value": torch.tensor([0.0, 5.0]), "y_churn": torch.tensor([1.0, 0.0]),
             "arm_index": torch.tensor([0, 1]), "y_converted": torch.tensor([0.0, 1.0]),
             "y_response": torch.tensor([0.0, 9.0])}
    total, parts = multitask_loss(out, batch)
    v = out["value"].detach().double()
    value = ziln_nll(v[:, 0], v[:, 1], losses.ziln_sigma(v[:, 2]), batch["y_value"].double()).mean()
    churn = torch.nn.functional.binary_cross_entropy_with_logits(out["churn"].detach(), batch["y_churn"])
    a = out["arm"].detach().double()
    own = torch.stack([a[0, 0], a[1, 1]])
    uplift = (torch.nn.functional.binary_cross_entropy_with_logits(own[:, 0], batch["y_converted"].double(), reduction="none")
              + ziln_nll(own[:, 1], own[:, 2], losses.ziln_sigma(own[:, 3]), batch["y_response"].double())).mean()
    assert parts["value"][0] == pytest.approx(float(value), rel=1e-5)
    assert parts["churn"][0] == pytest.approx(float(churn), rel=1e-5)
    assert parts["uplift"][0] == pytest.approx(float(uplift), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(value + churn + uplift), rel=1e-5)


def test_the_long_term_head_learns_the_horizon_spend_of_exposed_rows_under_their_own_arm():
    out = _heads(3, arms=2, seed=4, arm_outputs=7)
    batch = {"y_value": torch.tensor([30.0, 0.0, 12.0]), "y_churn": torch.tensor([0.0, 1.0, 0.0]),
             "arm_index": torch.tensor([1, 0, -1]), "y_converted": torch.tensor([1.0, 0.0, 0.0]),
             "y_response": torch.tensor([8.0, 0.0, 0.0])}
    total, parts = multitask_loss(out, batch)
    a = out["arm"].detach().double()
    own = torch.stack([a[0, 1], a[1, 0]])                       # row 2 is not exposed
    long = ziln_nll(own[:, 4], own[:, 5], losses.ziln_sigma(own[:, 6]), batch["y_value"][:2].double()).mean()
    assert parts["uplift_long"] == (pytest.approx(float(long), rel=1e-5), 2.0)
    assert float(total.detach()) == pytest.approx(sum(v for v, _ in parts.values()), rel=1e-5)
    total.backward()
    grad = out["arm"].grad
    assert grad[2].abs().sum() == 0 and grad[0, 0].abs().sum() == 0 and grad[1, 1].abs().sum() == 0
    assert grad[0, 1, 4:].abs().sum() > 0 and grad[1, 0, 4:].abs().sum() > 0
    # without the long-term outputs there is no such part
    assert "uplift_long" not in multitask_loss(_heads(3, arms=2, seed=4), batch)[1]
