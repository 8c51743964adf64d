"""The certificate's torch part (``fttpo_ray/rl_module/certificate.py``) on members whose
rewards are known by hand: linear members (no hidden layer) with set weights, so that the gain
over the safe action, its spread, the lower bound and the certified cut can be written down.
Fitting and calibration are tested in tests/algorithms/test_certificate.py."""

from __future__ import annotations

import math

import pytest
import torch

from fttpo_ray.rl_module.certificate import (
    MULTIPLIER,
    OBS_SCALE,
    OBS_SHIFT,
    SAFE_ACTION,
    RewardEnsemble,
    SafetyCertificate,
)

#: Weights of three linear members r_e(s, a) = W_OBS . (s - shift) / scale + A_e a + B_e.
W_OBS = (0.5, -1.0)
A = (1.0, 2.0, 3.0)
B = (0.1, -0.2, 0.3)


def linear_certificate(*, grid_points: int = 5, safe_action: float = 0.0) -> SafetyCertificate:
    """Members differ only in their action weight: r_e(s, a) - r_e(s, safe) = A_e (a - safe),
    so the gain is 2 (a - safe) and its spread (the s.d. of 1, 2, 3) is |a - safe|."""
    certificate = SafetyCertificate(
        2, num_members=3, hiddens=[], grid_points=grid_points, safe_action=safe_action
    )
    ((weight, bias),) = certificate.ensemble.layers()
    for e in range(3):
        weight[e, :, 0] = torch.tensor([*W_OBS, A[e]])
        bias[e, 0, 0] = B[e]
    certificate.obs_shift.copy_(torch.tensor([1.0, -1.0]))
    certificate.obs_scale.copy_(torch.tensor([2.0, 0.5]))
    return certificate


def test_member_rewards_standardise_the_observation_by_hand() -> None:
    certificate = linear_certificate()
    obs = torch.tensor([[3.0, 0.0]])  # standardised: (1, 2)
    rewards = certificate.member_rewards(obs, torch.tensor([[0.5, -1.0]]))
    assert rewards.shape == (3, 1, 2)
    obs_term = 0.5 * 1.0 - 1.0 * 2.0
    for e in range(3):
        for g, a in enumerate((0.5, -1.0)):
            assert rewards[e, 0, g].item() == pytest.approx(obs_term + A[e] * a + B[e])


def test_gain_spread_and_lower_bound_by_hand() -> None:
    certificate = linear_certificate(safe_action=0.25)
    certificate.multiplier.fill_(1.5)
    obs = torch.tensor([[3.0, 0.0], [-1.0, 4.0]])
    doses = torch.tensor([[0.75, -0.25], [0.25, 1.0]])
    gain, spread = certificate.gain(obs, doses)
    delta = doses - 0.25
    torch.testing.assert_close(gain, 2.0 * delta)
    torch.testing.assert_close(spread, delta.abs())
    torch.testing.assert_close(certificate.lower_bound(obs, doses), 2.0 * delta - 1.5 * delta.abs())


def test_cut_keeps_the_certified_doses_of_the_thin_support() -> None:
    """c = 1, safe 0: LCB = 2a - |a| >= 0 exactly where a >= 0. Support [-1, 1] on 5 doses
    (-1, -0.5, 0, 0.5, 1): 0, 0.5, 1 certified, cut [0, 1], share 3/5, mean width c|a| = 0.6.
    Support [0.5, 0.9] (loc 0.7, h 0.2) is all certified; [-1, -0.5] none: abstain, cut at the
    safe action."""
    certificate = linear_certificate()
    certificate.multiplier.fill_(1.0)
    obs = torch.zeros(3, 2)
    loc = torch.tensor([[0.0], [0.7], [-0.75]])
    halfwidth = torch.tensor([[1.0], [0.2], [0.25]])
    support = certificate.cut(obs, loc, halfwidth)
    torch.testing.assert_close(support.low, torch.tensor([0.0, 0.5, 0.0]))
    torch.testing.assert_close(support.high, torch.tensor([1.0, 0.9, 0.0]))
    assert support.abstain.tolist() == [False, False, True]
    torch.testing.assert_close(support.certified_share, torch.tensor([0.6, 1.0, 0.0]))
    torch.testing.assert_close(support.bound_width, torch.tensor([0.6, 0.7, 0.75]))


def test_a_wide_bound_leaves_only_the_safe_dose() -> None:
    """c = 3: LCB = 2a - 3|a| >= 0 only at a = 0: one certified dose, not an abstention."""
    certificate = linear_certificate()
    certificate.multiplier.fill_(3.0)
    support = certificate.cut(torch.zeros(1, 2), torch.zeros(1, 1), torch.ones(1, 1))
    assert (support.low.item(), support.high.item(), bool(support.abstain)) == (0.0, 0.0, False)
    assert support.certified_share.item() == pytest.approx(0.2)


def test_an_uncalibrated_certificate_has_an_infinite_multiplier() -> None:
    certificate = SafetyCertificate(2, num_members=2, hiddens=[4], grid_points=3)
    assert certificate.multiplier.item() == math.inf
    support = certificate.cut(torch.randn(4, 2), torch.zeros(4, 1), torch.full((4, 1), 0.5))
    assert bool(support.abstain.all()) and support.certified_share.sum().item() == 0.0


def test_everything_is_a_buffer_in_the_state_and_nothing_a_parameter() -> None:
    """No optimizer sees the certificate; every checkpoint carries it."""
    certificate = SafetyCertificate(3, num_members=4, hiddens=[8, 8], grid_points=5)
    assert list(certificate.parameters()) == []
    assert set(certificate.state_dict()) == {
        OBS_SHIFT,
        OBS_SCALE,
        SAFE_ACTION,
        MULTIPLIER,
        *(f"ensemble.{kind}_{i}" for kind in ("weight", "bias") for i in range(3)),
    }


def test_reward_ensemble_members_are_their_own_relu_mlps() -> None:
    """Shared input (B, in) or one batch per member (E, B, in): each row is member e's MLP."""
    ensemble = RewardEnsemble(3, 4, [5], generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    per_member = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(2))
    (w0, b0), (w1, b1) = ensemble.layers()
    for inputs in (x, per_member):
        out = ensemble(inputs)
        assert out.shape == (3, 6)
        for e in range(3):
            h = inputs if inputs.dim() == 2 else inputs[e]
            expected = torch.relu(h @ w0[e] + b0[e]) @ w1[e] + b1[e]
            torch.testing.assert_close(out[e], expected.squeeze(-1))


def test_reward_ensemble_initialisation_is_seeded_and_bounded_like_nn_linear() -> None:
    first = RewardEnsemble(2, 16, [9], generator=torch.Generator().manual_seed(3))
    again = RewardEnsemble(2, 16, [9], generator=torch.Generator().manual_seed(3))
    for (w, b), (w2, b2) in zip(first.layers(), again.layers(), strict=True):
        assert torch.equal(w, w2) and torch.equal(b, b2)
    (w0, _), (w1, _) = first.layers()
    assert w0.abs().max() <= 1.0 / math.sqrt(16) and w1.abs().max() <= 1.0 / 3.0
    assert not torch.equal(w0[0], w0[1])  # members drawn independently
