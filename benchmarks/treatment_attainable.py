"""What is attainable on the treatment simulator from its noisy observation, and what the
1 200 transitions of ``fttpo/treatment/random-v0`` identify (docs/algorithm.md §2.3).

Measures, on the evaluation episodes ``1 000 000 + i`` (1 000 by default):

- ``linear_cem``: the best linear policy ``a = clip(w·s + b)``, searched with unlimited
  simulator access (cross-entropy method on a vectorised copy of the simulator's dynamics and
  reward, fresh episodes every generation): an upper reference for a state-dependent policy
  that sees only ``s``;
- ``myopic_model_<data>``: the dose maximising a ridge reward model
  ``r ~ [1, s, a, a s, a², a² s]`` (37 features) fitted on the dataset, or on ``N`` simulated
  uniform-random episodes;
- ``data_constant_dose``: the argmax of a quadratic fit of reward on dose over bootstrap
  resamples of the dataset's episodes (a state-independent policy chosen from the data), and its
  expected return read off the constant-dose grid on the evaluation episodes.

Nothing is trained with RLlib. Results: ``benchmarks/results/treatment_attainable.{json,md}``::

    .venv/bin/python benchmarks/treatment_attainable.py
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import _common as c
import gymnasium as gym
import numpy as np

ENV_ID = "fttpo/TreatmentSim-v0"
DATASET = c.TREATMENT_DATASET
EVAL_SEED = 1_000_000
HORIZON = 24
STATE_DIM = 8


def rollout(act: Callable[[np.ndarray], float], episodes: int, seed: int) -> dict[str, float]:
    """Return (mean, s.e.) and violation rate of an observation -> dose rule, episodes seed+i."""
    env = gym.make(ENV_ID)
    returns, violations, actions = np.zeros(episodes), 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            a = np.asarray([act(obs)], dtype=np.float32)
            violations += int(env.unwrapped.prohibited(a)[0])
            actions += 1
            obs, r, term, trunc, _ = env.step(a)
            returns[i] += float(r)
            done = term or trunc
    env.close()
    return {
        "episode_return_mean": float(returns.mean()),
        "episode_return_sem": float(returns.std(ddof=1) / math.sqrt(episodes)),
        "violation_rate": violations / actions,
    }


def simulate(
    policy: Callable[[np.ndarray], np.ndarray], n: int, rng: np.random.Generator
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean undiscounted return of ``policy`` (states -> doses) on ``n`` fresh episodes of the
    simulator's dynamics, and the transitions (obs, dose, reward)."""
    from fttpo_ray.envs.treatment import next_hidden_mean, treatment_reward

    mu = rng.uniform(-1.0, 1.0, (n, STATE_DIM))
    # C = corrcoef(columns of U(0, 1)^{8x8}) / 2 per episode, factored by eigen-decomposition
    # with the eigenvalues clipped at 0, as the environment does (batched here).
    x = rng.uniform(0.0, 1.0, (n, STATE_DIM, STATE_DIM))
    x = x - x.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", x, x)
    scale = np.sqrt(np.einsum("nii->ni", cov))
    corr = cov / (scale[:, :, None] * scale[:, None, :]) / 2.0
    eigenvalues, eigenvectors = np.linalg.eigh(corr)
    factors = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None, :]

    def draw(mean: np.ndarray) -> np.ndarray:
        return mean + np.einsum("nij,nj->ni", factors, rng.standard_normal((n, STATE_DIM)))

    s, total = draw(mu), np.zeros(n)
    obs, doses, rewards = [], [], []
    for _ in range(HORIZON):
        a = np.clip(policy(s), -1.0, 1.0)
        mu = next_hidden_mean(mu, a)
        s_next = draw(mu)
        r = treatment_reward(a, s_next)
        obs.append(s), doses.append(a), rewards.append(r)
        total += r
        s = s_next
    table = {"obs": np.concatenate(obs), "a": np.concatenate(doses), "r": np.concatenate(rewards)}
    return float(total.mean()), table


def linear_cem(generations: int, candidates: int, episodes: int, start: float) -> np.ndarray:
    """Cross-entropy search of ``(w, b)`` for ``a = clip(w·s + b)``; returns the final mean."""
    rng = np.random.default_rng(0)
    mean = np.zeros(STATE_DIM + 1)
    mean[-1] = start
    std = np.full(STATE_DIM + 1, 0.3)
    for generation in range(generations):
        population = mean + std * rng.standard_normal((candidates, STATE_DIM + 1))
        scores = [
            simulate(
                lambda s, p=p: s @ p[:STATE_DIM] + p[STATE_DIM],
                episodes,
                np.random.default_rng(1000 + generation),
            )[0]
            for p in population
        ]
        elite = population[np.argsort(scores)[-max(2, candidates // 5) :]]
        mean, std = elite.mean(axis=0), elite.std(axis=0) + 0.01
    return mean


def features(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    a = a[:, None]
    return np.hstack([np.ones_like(a), s, a, a * s, a**2, a**2 * s])


def myopic_model_policy(s: np.ndarray, a: np.ndarray, r: np.ndarray) -> Callable:
    """Ridge (lambda 1) reward model; the policy takes its argmax over a 201-dose grid."""
    x = features(s, a)
    beta = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ r)
    grid = np.linspace(-1.0, 1.0, 201)

    def act(obs: np.ndarray) -> float:
        values = features(np.repeat(obs[None].astype(np.float64), len(grid), 0), grid) @ beta
        return float(grid[int(np.argmax(values))])

    return act


def data_constant_dose(resamples: int) -> np.ndarray:
    """Argmax of ``r ~ c0 + c1 a + c2 a²`` on bootstrap resamples of the dataset's episodes."""
    from fttpo_ray.data import load_transitions

    t = load_transitions(DATASET)
    a, r, ids = t.actions[:, 0].astype(np.float64), t.rewards.astype(np.float64), t.episode_ids
    x = np.c_[np.ones_like(a), a, a * a]
    rows = [np.flatnonzero(ids == e) for e in range(t.episodes)]
    rng = np.random.default_rng(0)
    doses = []
    for _ in range(resamples):
        index = np.concatenate([rows[e] for e in rng.integers(0, t.episodes, t.episodes)])
        c0, c1, c2 = np.linalg.lstsq(x[index], r[index], rcond=None)[0]
        doses.append(-c1 / (2 * c2) if c2 < 0 else float(np.sign(c1)))
    return np.clip(np.asarray(doses), -1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--cem-episodes", type=int, default=300)
    args = parser.parse_args()

    import fttpo_ray  # noqa: F401  (registers the env)
    from fttpo_ray.data import ensure_dataset, load_transitions
    from fttpo_ray.evaluation.reference import constant_dose_reference

    ensure_dataset(DATASET)
    out: dict[str, Any] = {"evaluation_seed": EVAL_SEED, "episodes": args.episodes}
    const = constant_dose_reference(ENV_ID, episodes=args.episodes, seed=EVAL_SEED)
    grid = {d: v["episode_return_mean"] for d, v in const.evaluation.items()}
    out["best_constant_dose"] = {"dose": const.best_dose, **const.best}
    print("best constant", const.best_dose, const.best["episode_return_mean"], flush=True)

    w = linear_cem(args.generations, args.candidates, args.cem_episodes, const.best_dose)
    out["linear_cem"] = {
        "weights": w[:STATE_DIM].tolist(),
        "bias": float(w[STATE_DIM]),
        "simulated_episodes": args.generations * args.candidates * args.cem_episodes,
        **rollout(
            lambda o: float(np.clip(o @ w[:STATE_DIM] + w[STATE_DIM], -1, 1)),
            args.episodes,
            EVAL_SEED,
        ),
    }
    print("linear", out["linear_cem"], flush=True)

    t = load_transitions(DATASET)
    sources = {"dataset": (t.obs, t.actions[:, 0], t.rewards)}
    for n in (500, 5000):
        _, table = simulate(
            lambda s: np.random.default_rng(len(s)).uniform(-1, 1, len(s)),
            n,
            np.random.default_rng(7),
        )
        sources[f"simulated_{n}_episodes"] = (table["obs"], table["a"], table["r"])
    for name, (s, a, r) in sources.items():
        act = myopic_model_policy(s.astype(np.float64), a.astype(np.float64), r.astype(np.float64))
        out[f"myopic_model_{name}"] = {
            "transitions": len(r),
            **rollout(act, args.episodes, EVAL_SEED),
        }
        print(name, out[f"myopic_model_{name}"], flush=True)

    doses = data_constant_dose(2000)
    keys = np.array(sorted(grid))
    returns = np.interp(doses, keys, np.array([grid[k] for k in keys]))
    out["data_constant_dose"] = {
        "median": float(np.median(doses)),
        "p10": float(np.percentile(doses, 10)),
        "p90": float(np.percentile(doses, 90)),
        "expected_return": float(returns.mean()),
        "return_p10": float(np.percentile(returns, 10)),
        "return_p90": float(np.percentile(returns, 90)),
    }
    lines = [
        f"Evaluation episodes {EVAL_SEED} + i, {args.episodes} of them; return mean ± s.e. "
        "over episodes.\n",
        "| policy | return | violation rate |",
        "|---|---|---|",
        f"| best constant dose a = {const.best_dose:g} (chosen on seeds 2 000 000 + i) | "
        f"{c.fmt_mean_se(const.best['episode_return_mean'], const.best['episode_return_sem'])} | "
        f"{const.best['violation_rate']:.3f} |",
    ]
    lin = out["linear_cem"]
    lines.append(
        f"| best linear policy (CEM, {lin['simulated_episodes']} simulated episodes; bias "
        f"{lin['bias']:.2f}, max abs weight {np.abs(lin['weights']).max():.2f}) | "
        f"{c.fmt_mean_se(lin['episode_return_mean'], lin['episode_return_sem'])} | "
        f"{lin['violation_rate']:.3f} |"
    )
    for name in sources:
        row = out[f"myopic_model_{name}"]
        lines.append(
            f"| myopic ridge reward model on {name} ({row['transitions']} transitions) | "
            f"{c.fmt_mean_se(row['episode_return_mean'], row['episode_return_sem'])} | "
            f"{row['violation_rate']:.3f} |"
        )
    d = out["data_constant_dose"]
    lines.append(
        f"\nConstant dose chosen from the dataset (argmax of a quadratic reward fit, 2 000 "
        f"bootstrap resamples of its episodes): median {d['median']:.2f} (10–90 %: "
        f"{d['p10']:.2f}–{d['p90']:.2f}); expected return on the evaluation episodes "
        f"{d['expected_return']:.2f} (10–90 %: {d['return_p10']:.2f} to {d['return_p90']:.2f})."
    )
    text = "\n".join(lines)
    print(text)
    c.write_results("treatment_attainable", out, text)


if __name__ == "__main__":
    main()
