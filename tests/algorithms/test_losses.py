"""FtTPO losses on hand-computed tensors (layer: exact maths)."""

from __future__ import annotations

import math

import pytest
import torch

from fttpo_ray.algorithms.fttpo import losses


def test_td_target_bootstraps_unless_terminated():
    # y = r + gamma (1 - d) Qbar: 1 + 0.9 * 2 = 2.8 ; 0.5 + 0 = 0.5 (terminated)
    y = losses.td_target(
        torch.tensor([1.0, 0.5]), torch.tensor([False, True]), torch.tensor([2.0, 7.0]), 0.9
    )
    torch.testing.assert_close(y, torch.tensor([2.8, 0.5]))
    assert not y.requires_grad


def test_critic_loss_sums_half_mse_per_critic():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0], [1.0, 1.0]], requires_grad=True)  # E = 3 critics
    y = torch.tensor([1.0, 1.0], requires_grad=True)
    # Q1: 1/2 mean(0, 1) = 0.25 ; Q2: 1/2 mean(1, 9) = 2.5 ; Q3: 0
    loss = losses.critic_loss(q, y)
    assert loss.item() == pytest.approx(2.75)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([[0.0, 0.5], [-0.5, 1.5], [0.0, 0.0]]))
    assert y.grad is None


def test_value_loss_has_no_gradient_into_the_target():
    v = torch.tensor([1.0, 3.0], requires_grad=True)
    target = torch.tensor([2.0, 2.0], requires_grad=True)
    loss = losses.value_loss(v, target)
    assert loss.item() == pytest.approx(0.5)  # 1/2 mean(1, 1)
    loss.backward()
    assert target.grad is None
    torch.testing.assert_close(v.grad, torch.tensor([-0.5, 0.5]))


def test_linear_advantage_weights_truncate_low_advantages():
    # q_w = 0: w = [1 + A/tau]_+ with tau = 0.5: A = (1, 0, -0.25, -2) -> (3, 1, 0.5, 0 -> 1e-8)
    q = torch.tensor([2.0, 1.0, 0.75, -1.0])
    v = torch.ones(4)
    w = losses.advantage_weights(q, v, kl_weight=0.5, weight_q=0.0, w_max=1e4)
    torch.testing.assert_close(w.weights, torch.tensor([3.0, 1.0, 0.5, losses.WEIGHT_MIN]))
    assert w.truncated.tolist() == [False, False, False, True]
    torch.testing.assert_close(w.advantages, torch.tensor([1.0, 0.0, -0.25, -2.0]))


def test_exponential_advantage_weights_are_clipped_at_w_max():
    q = torch.tensor([0.0, 10.0])
    w = losses.advantage_weights(q, torch.zeros(2), kl_weight=1.0, weight_q=1.0, w_max=100.0)
    torch.testing.assert_close(w.weights, torch.tensor([1.0, 100.0]))  # exp(0), min(exp(10), 100)


def test_weighted_log_likelihood():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = losses.weighted_log_likelihood_loss(log_prob, torch.tensor([2.0, 0.5]))
    assert loss.item() == pytest.approx(-(2.0 * -1.0 + 0.5 * -2.0) / 2)  # 1.5
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -0.25]))


def test_reverse_kl_estimator_values_and_clip():
    # r = 1 -> 0 ; r = e -> e - 2 ; r = exp(-1) -> exp(-1) - 1 + 1 = exp(-1)
    thin = torch.tensor([0.0, 0.0, 0.0])
    fat = torch.tensor([0.0, 1.0, -1.0])
    expected = (0.0 + (math.e - 2.0) + math.exp(-1.0)) / 3
    assert losses.reverse_kl_estimate(thin, fat).item() == pytest.approx(expected, rel=1e-6)
    # log r = 20 is clipped at log 10: 10 - 1 - log 10
    clipped = losses.reverse_kl_estimate(torch.tensor([0.0]), torch.tensor([20.0]), ratio_clip=10.0)
    assert clipped.item() == pytest.approx(9.0 - math.log(10.0), rel=1e-6)


def test_reverse_kl_estimator_is_zero_only_for_equal_densities_and_never_negative():
    torch.manual_seed(0)
    thin = torch.randn(1000)
    fat = torch.randn(1000)
    assert losses.reverse_kl_estimate(thin, fat).item() > 0.0
    assert losses.reverse_kl_estimate(thin, thin).item() == pytest.approx(0.0, abs=1e-7)


def test_reverse_kl_to_boltzmann_loss():
    log_prob = torch.tensor([-1.0, 0.0])
    q = torch.tensor([2.0, 4.0], requires_grad=True)
    loss = losses.reverse_kl_to_boltzmann_loss(log_prob, q, kl_weight=0.5)
    assert loss.item() == pytest.approx(((-1.0 - 4.0) + (0.0 - 8.0)) / 2)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([-1.0, -1.0]))  # -1/(tau B)


def test_random_action_replacement_picks_nearest_sample_only_for_outside_actions():
    actions = torch.tensor([[0.9], [0.0]])
    inside = torch.tensor([False, True])
    candidates = torch.tensor([[[0.1], [0.3]], [[0.6], [-0.2]], [[0.2], [0.1]]])  # (M=3, B=2, 1)
    out = losses.random_action_replacement(actions, inside, candidates)
    torch.testing.assert_close(out.actions, torch.tensor([[0.6], [0.0]]))
    assert out.replaced.tolist() == [True, False]
