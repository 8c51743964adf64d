"""The safety certificate (docs/algorithm.md §5.1): the calibrated lower bound on a hand-made
problem whose safe set is known, the certified cut of the thin support, the module's acting
policy with a certificate, and (slow) checkpoints and ``fttpo eval`` carrying it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.fttpo.certificate import calibrate_multiplier, fit_reward_ensemble
from fttpo_ray.rl_module.certificate import (
    CertifiedThinDistribution,
    SafetyCertificate,
    longest_run,
)

#: The hand-made problem: s ~ U(-1, 1), logged doses a ~ U(-1, 1), r = g(s, a) + N(0, NOISE^2)
#: with expected reward r̄(s, a) = 2 s a - a^2 (so r̄(s, 0) = 0): the doses no worse than the
#: safe dose 0 are those between 0 and 2 s, known exactly.
NOISE = 0.3


def expected_reward(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    return 2.0 * s * a - a**2


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = rng.uniform(-1.0, 1.0, (n, 1))
    a = rng.uniform(-1.0, 1.0, (n, 1))
    r = expected_reward(s[:, 0], a[:, 0]) + NOISE * rng.standard_normal(n)
    return s.astype(np.float32), a.astype(np.float32), r.astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> SafetyCertificate:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    s, a, r = draw(2000, rng)
    certificate = SafetyCertificate(
        1,
        num_members=5,
        hiddens=[32, 32],
        grid_points=21,
        generator=torch.Generator().manual_seed(0),
    )
    episodes = np.repeat(np.arange(200), 10)
    fit_reward_ensemble(certificate, s, a, r, episodes, seed=0, steps=400)
    return certificate


def test_longest_run_hand_computed() -> None:
    mask = torch.tensor(
        [
            [0, 1, 1, 0, 1, 1, 1, 0, 0],  # longest run 4..6
            [1, 1, 0, 0, 0, 0, 0, 1, 1],  # two runs of 2: the one nearer the centre (4)... tie
            [0, 0, 0, 1, 0, 0, 0, 0, 0],  # a single point
            [0, 0, 0, 0, 0, 0, 0, 0, 0],  # nothing
            [1, 1, 1, 1, 1, 1, 1, 1, 1],  # everything
        ],
        dtype=torch.bool,
    )
    low, high = longest_run(mask, centre=4.0)
    assert low.tolist()[0] == 4 and high.tolist()[0] == 6
    assert (low[1].item(), high[1].item()) in {(0, 1), (7, 8)}  # equally far from the centre
    assert (low[2].item(), high[2].item()) == (3, 3)
    assert (low[4].item(), high[4].item()) == (0, 8)
    mask[1, 7] = False  # now (0, 1) is the only run of 2
    low, high = longest_run(mask, centre=4.0)
    assert (low[1].item(), high[1].item()) == (0, 1)


#: Seeded outcomes per alpha: (share of the 1 000 calibration pairs certified, share of the
#: 4 203 truly safe test doses (true gain > 0.2) certified). Tolerance 0.005 (5 calibration
#: pairs, 21 test doses: the fit's float rounding); a 0.1 shift fails.
SEEDED_SHARES = {0.05: (0.121, 0.5220), 0.2: (0.281, 0.9855)}
SHARE_TOLERANCE = 0.005


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_falsely_certified_rate_is_at_most_alpha_on_a_known_safe_set(
    fitted: SafetyCertificate, alpha: float
) -> None:
    """Calibrated on 1 000 held-out pairs, tested on 20 000 fresh pairs of the same law.

    Conformal risk control bounds the expected loss 1[certified, r < LCB] by alpha / 2
    (over calibration draws); one draw of 1 000 pairs fluctuates by its binomial standard
    deviation, so the tolerance is 3 standard deviations of the calibration and of the test
    sample. With symmetric noise, the share of doses certified although their true gain
    r̄(s, a) - r̄(s, 0) is negative is then at most alpha (plus the same tolerance)."""
    rng = np.random.default_rng(1)
    s_cal, a_cal, r_cal = draw(1000, rng)
    calibration = calibrate_multiplier(fitted, s_cal, a_cal, r_cal, alpha=alpha)
    held_out_share, useful_share = SEEDED_SHARES[alpha]
    assert math.isfinite(calibration.multiplier)
    assert calibration.held_out_certified == pytest.approx(held_out_share, abs=SHARE_TOLERANCE)
    s, a, r = draw(20_000, rng)
    with torch.no_grad():
        bound = fitted.lower_bound(torch.as_tensor(s), torch.as_tensor(a))[:, 0].numpy()
        safe = fitted.member_rewards(torch.as_tensor(s), torch.zeros(len(s), 1)).mean(0)[:, 0]
    certified = bound >= 0.0
    label = r - safe.numpy()
    risk = float(np.mean(certified & (label < bound)))
    half = alpha / 2.0
    tolerance = 3.0 * math.sqrt(half * (1 - half)) * (1 / math.sqrt(1000) + 1 / math.sqrt(20_000))
    assert risk <= half + tolerance
    true_gain = expected_reward(s[:, 0], a[:, 0])  # r̄(s, 0) = 0
    falsely_certified = float(np.mean(certified & (true_gain < 0.0)))
    assert falsely_certified <= alpha + 2 * tolerance
    # and the certificate is useful: it certifies a sizeable share of the truly safe doses
    assert certified[true_gain > 0.2].mean() == pytest.approx(useful_share, abs=SHARE_TOLERANCE)
    # a smaller alpha never certifies more
    smaller = calibrate_multiplier(fitted, s_cal, a_cal, r_cal, alpha=alpha / 4)
    assert smaller.multiplier >= calibration.multiplier


def test_certified_policy_stays_in_the_thin_support_and_abstains_to_the_safe_action(
    fitted: SafetyCertificate,
) -> None:
    rng = np.random.default_rng(2)
    s_cal, a_cal, r_cal = draw(1000, rng)
    calibrate_multiplier(fitted, s_cal, a_cal, r_cal, alpha=0.2)
    n = 400
    obs = torch.linspace(-1.0, 1.0, n).unsqueeze(-1)
    loc = torch.as_tensor(rng.uniform(-0.8, 0.8, (n, 1)), dtype=torch.float32)
    half = torch.as_tensor(rng.uniform(0.01, 0.5, (n, 1)), dtype=torch.float32)
    support = fitted.cut(obs, loc, half)
    dist = CertifiedThinDistribution(support, q=0.0)
    samples = dist.sample((200,))[..., 0]  # (200, n)
    lo, hi = (loc - half)[:, 0], (loc + half)[:, 0]
    abstain = support.abstain
    inside = (samples >= lo - 1e-6) & (samples <= hi + 1e-6)
    assert bool(inside[:, ~abstain].all())  # never outside the thin support when acting
    assert bool(((samples >= support.low - 1e-6) & (samples <= support.high + 1e-6)).all())
    assert 0 < int(abstain.sum()) < n  # both cases occur at these states
    assert bool((samples[:, abstain] == 0.0).all())  # exactly the safe action
    assert bool((dist.loc[abstain, 0] == 0.0).all())
    assert bool((dist.log_prob(torch.zeros(n, 1))[abstain] == 0.0).all())
    # every certified support's ends are certified doses (LCB >= 0 there)
    kept = ~abstain
    ends = torch.stack([support.low[kept], support.high[kept]], dim=-1)
    with torch.no_grad():
        assert bool((fitted.lower_bound(obs[kept], ends) >= 0.0).all())
    # the certified share is the share of certified grid doses of each support
    assert bool(((support.certified_share > 0) == kept).all())


def test_an_uncalibrated_certificate_certifies_nothing() -> None:
    certificate = SafetyCertificate(3, num_members=2, hiddens=[4], grid_points=5)
    support = certificate.cut(torch.zeros(7, 3), torch.zeros(7, 1), torch.full((7, 1), 0.5))
    assert bool(support.abstain.all())
    assert CertifiedThinDistribution(support, q=0.0).sample().abs().max().item() == 0.0


def test_module_acts_with_the_certified_support_and_keeps_it_in_its_state() -> None:
    import gymnasium as gym

    from fttpo_ray.rl_module.fttpo_rl_module import (
        CERTIFICATE_GRID_POINTS,
        CERTIFICATE_HIDDENS,
        CERTIFICATE_MEMBERS,
        SAFE_ACTION,
        SAFETY_CERTIFICATE,
        FtTPOTorchRLModule,
    )

    def build(inference_only: bool) -> FtTPOTorchRLModule:
        return FtTPOTorchRLModule(
            observation_space=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
            inference_only=inference_only,
            model_config={
                "fcnet_hiddens": [16],
                SAFETY_CERTIFICATE: {
                    CERTIFICATE_MEMBERS: 3,
                    CERTIFICATE_HIDDENS: [8],
                    CERTIFICATE_GRID_POINTS: 11,
                    SAFE_ACTION: 0.0,
                },
            },
        )

    module = build(False)
    module.certificate.multiplier.fill_(0.0)  # certify wherever the ensemble's mean gain >= 0
    obs = torch.randn(32, 3)
    out = module.forward_inference({Columns.OBS: obs})
    dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    actions = dist.sample()
    params = module.policy_params(obs)
    lo, hi = params.loc - params.thin_halfwidth, params.loc + params.thin_halfwidth
    abstain = out[Columns.ACTION_DIST_INPUTS][:, 2] > 0.5
    inside = (actions >= lo - 1e-6) & (actions <= hi + 1e-6)
    assert bool((inside[~abstain]).all()) and bool((actions[abstain] == 0.0).all())
    # the inference-only module (env runners) carries the certificate and acts the same
    runner = build(True)
    runner.set_state(module.get_state(inference_only=True))
    assert torch.equal(runner.certificate.multiplier, module.certificate.multiplier)
    assert torch.equal(
        runner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        out[Columns.ACTION_DIST_INPUTS],
    )


@pytest.mark.slow
def test_checkpoint_and_fttpo_eval_carry_the_certificate(ray_local, tmp_path) -> None:
    from fttpo_ray import FtTPO, FtTPOConfig
    from fttpo_ray.algorithms.learner_module import learner_module

    config = (
        FtTPOConfig()
        .dataset("fttpo/treatment/random-v0")
        .training(
            num_gradient_steps_per_iteration=10,
            train_batch_size_per_learner=32,
            gamma=0.9,
            safety_certificate=True,
            certificate_alpha=0.2,
        )
        .rl_module(model_config={"fcnet_hiddens": [16, 16]})
        .evaluation(evaluation_duration=4)
        .debugging(seed=3)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        certified = result["evaluation"][m.CERTIFIED]
        for key in (m.ABSTENTION_RATE, m.CERTIFIED_SHARE_MEAN, m.CERTIFICATE_MULTIPLIER):
            assert key in certified
        assert m.THIN in result["evaluation"]
        state = learner_module(algo).certificate.state_dict()
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = FtTPO.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        again = learner_module(restored).certificate.state_dict()
        assert set(again) == set(state)
        assert all(torch.equal(again[k], state[k]) for k in state)
    finally:
        restored.stop()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fttpo_ray.cli",
            "eval",
            str(tmp_path / "ckpt"),
            "--episodes",
            "3",
            "--seed",
            "5",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert {m.THIN, m.CERTIFIED} <= set(report)
    for key in (
        m.EPISODE_RETURN_MEAN,
        m.VIOLATION_RATE,
        m.VIOLATION_RATE_UB95,
        m.ABSTENTION_RATE,
        m.CERTIFIED_SHARE_MEAN,
        m.CERTIFIED_WIDTH_MEAN,
        m.CERTIFICATE_BOUND_WIDTH_MEAN,
        m.CERTIFICATE_MULTIPLIER,
    ):
        assert key in report[m.CERTIFIED], key
    assert report[m.CERTIFIED][m.EPISODES] == 3


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"certificate_alpha": 1.5}, r"`certificate_alpha` must be in \(0, 1\); got 1.5"),
        ({"certificate_alpha": 0.0}, r"`certificate_alpha` must be in \(0, 1\)"),
        ({"certificate_members": 1}, "`certificate_members` must be an integer >= 2; got 1"),
        ({"certificate_grid_points": 1}, "`certificate_grid_points` must be an integer >= 2"),
        ({"certificate_hiddens": []}, "`certificate_hiddens` must be a non-empty list"),
        ({"safety_certificate": "yes"}, "`safety_certificate` must be true or false"),
        (
            {"safety_certificate": True, "variant": "fat_only"},
            "in variant 'fat_only' no thin policy acts",
        ),
        (
            {"safety_certificate": True, "held_out_fraction": 0.0},
            "calibrated on held-out episodes; got held_out_fraction=0",
        ),
    ],
)
def test_certificate_settings_are_checked_with_one_line_errors(training, message) -> None:
    from fttpo_ray import FtTPOConfig
    from fttpo_ray.errors import ConfigError

    config = FtTPOConfig().dataset("fttpo/treatment/random-v0").training(**training)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_a_multi_dimensional_action_space_is_refused_in_one_line() -> None:
    certificate = SafetyCertificate(2, num_members=2, hiddens=[4], grid_points=3)
    from fttpo_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a 1-D action space; got actions of shape"):
        fit_reward_ensemble(
            certificate,
            np.zeros((4, 2), np.float32),
            np.zeros((4, 2), np.float32),
            np.zeros(4, np.float32),
            np.arange(4),
            seed=0,
        )
