"""Can FtTPO reach zero violations on the treatment simulator? Where its violations come from,
and a critic-certified support that removes most of them — **a proposed change to the method, not
FtTPO as specified**. Rows for ``benchmarks/results/treatment.md`` (``treatment_report.py``).

For each seed, FtTPO is trained with the ``fttpo`` entry of ``benchmarks/treatment.yaml`` (same
config and steps as ``treatment.py``, evaluation off during training), then the *same* learner
module is evaluated on the same ``evaluation.final_episodes`` episodes as

- ``thin``: the thin policy as specified (stochastic), as in ``treatment.py``;
- ``thin_loc``: the thin policy's location only (deterministic). If this violates as often as
  ``thin``, the violations come from *where* the support is centred, not from its width —
  shrinking the support cannot fix them;
- ``certified_abstain_m<margin>`` for each ``certified.margins``: the thin support intersected
  with the critic's certified set ``I(s)`` = the interval of doses around the location on which
  ``Q(s, a) >= Q(s, 0) + margin`` (the learned critic says "no worse than no treatment", a = 0
  being the simulator's known-safe action); the half-width is cut so that the support stays
  inside ``I(s)``; where the location itself is not certified the policy abstains (exactly
  a = 0). ``Q = min(Q1, Q2)`` on ``certified.grid_points`` doses;
- ``certified_argmax_m0``: the same with margin 0, but an uncertified location moves to the
  critic's argmax instead of abstaining (trusts the critic's ranking of doses).

Records are appended to ``benchmarks/results/treatment_certified_runs.jsonl``::

    .venv/bin/python benchmarks/treatment_certified.py --env normal --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch
from treatment import CERTIFIED_RUNS_FILE, CONFIG_FILE, ENVS, fttpo_config, load_config


def certified_params(
    module: Any, obs: torch.Tensor, margin: float, grid_points: int, fallback: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Location, half-width and abstention mask of the thin policy cut to the critic-certified
    interval around its location. Where the location itself is not certified, ``fallback``
    ``"abstain"`` gives a = 0; ``"argmax"`` moves the location to the critic's best dose (and
    abstains only if even that is not certified)."""
    params = module.policy_params(obs)
    loc, hw = params.loc[:, 0], params.thin_halfwidth[:, 0]
    grid = torch.linspace(-1.0, 1.0, grid_points)
    n = obs.shape[0]
    actions = grid.repeat(n).unsqueeze(-1)
    q = module.q_min(obs.repeat_interleave(grid_points, 0), actions).reshape(n, grid_points)
    q0 = module.q_min(obs, torch.zeros(n, 1))
    ok = (q >= (q0 + margin).unsqueeze(-1)).numpy()
    g = grid.numpy().astype(np.float64)
    step = float(g[1] - g[0])
    loc_np, hw_np = loc.double().numpy(), hw.double().numpy()
    rows = np.arange(n)
    centre = np.clip(np.searchsorted(g, loc_np), 0, grid_points - 1)
    moved = ~ok[rows, centre]
    if fallback == "argmax":
        centre = np.where(moved, q.argmax(dim=1).numpy(), centre)
    new_loc = np.where(moved, g[centre], loc_np)
    idx = np.arange(grid_points)[None, :]
    lo = np.where(~ok & (idx < centre[:, None]), idx, -1).max(axis=1) + 1
    hi = np.where(~ok & (idx > centre[:, None]), idx, grid_points).min(axis=1) - 1
    room = np.minimum(new_loc - g[lo], g[hi] - new_loc) - step
    new_hw = np.maximum(np.minimum(hw_np, room), 1e-3)
    abstain = ~ok[rows, centre]
    return (
        torch.as_tensor(new_loc, dtype=torch.float32).unsqueeze(-1),
        torch.as_tensor(new_hw, dtype=torch.float32).unsqueeze(-1),
        torch.as_tensor(abstain).unsqueeze(-1),
    )


class CertifiedThin:
    """The cut thin policy; exactly a = 0 where it abstains. Not a closed-form distribution, so
    the evaluator estimates its prohibited mass by Monte Carlo."""

    def __init__(self, thin: Any, abstain: torch.Tensor) -> None:
        self.thin = thin
        self.abstain = abstain
        self.loc = torch.where(abstain, torch.zeros_like(thin.loc), thin.loc)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        draw = self.thin.sample(torch.Size(sample_shape))
        return torch.where(self.abstain, torch.zeros_like(draw), draw)


def certified_policy(module: Any, margin: float, grid_points: int, fallback: str) -> Any:
    from fttpo_ray.distributions import SparseQGaussian
    from fttpo_ray.evaluation import EvalPolicy

    def distribution(obs: torch.Tensor) -> CertifiedThin:
        loc, hw, abstain = certified_params(module, obs, margin, grid_points, fallback)
        return CertifiedThin(SparseQGaussian(loc, hw, module.thin_q, validate_args=False), abstain)

    return EvalPolicy(f"certified_{fallback}_m{margin:g}", distribution, lambda d: d.loc)


def abstention_rate(module: Any, obs: np.ndarray, margin: float, grid_points: int) -> float:
    """Share of the dataset's states where the certified policy (``abstain``) gives a = 0."""
    with torch.no_grad():
        abstain = certified_params(
            module, torch.as_tensor(obs, dtype=torch.float32), margin, grid_points, "abstain"
        )[2]
    return float(abstain.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_FILE)
    parser.add_argument("--env", choices=tuple(ENVS), required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs-file", type=Path, default=CERTIFIED_RUNS_FILE)
    args = parser.parse_args()

    import ray

    import fttpo_ray  # noqa: F401  (registers the envs)
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
    from fttpo_ray.algorithms.learner_module import learner_module
    from fttpo_ray.data import ensure_dataset, load_transitions
    from fttpo_ray.evaluation import EvalPolicy, evaluate_policies

    cfg = load_config(args.config)
    ev, cert = cfg["evaluation"], cfg["certified"]
    torch.set_num_threads(1)
    env_id, dataset_id = ENVS[args.env]
    ensure_dataset(dataset_id)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for seed in args.seeds:
            start = time.perf_counter()
            algo = fttpo_config(cfg, "fttpo", args.env, seed, cfg["steps"]).build_algo()
            try:
                algo.train()
                module = learner_module(algo)
                thin = fttpo_policies(module)[0]
                certified = [
                    certified_policy(module, m, cert["grid_points"], "abstain")
                    for m in cert["margins"]
                ] + [certified_policy(module, 0.0, cert["grid_points"], "argmax")]
                abstention = {
                    f"certified_abstain_m{m:g}": abstention_rate(
                        module, load_transitions(dataset_id).obs, m, cert["grid_points"]
                    )
                    for m in cert["margins"]
                }
                episodes = {"episodes": ev["final_episodes"], "seed": ev["seed"]}
                with torch.no_grad():
                    final = evaluate_policies([thin, *certified], env_id, **episodes)
                    final |= evaluate_policies(
                        [EvalPolicy("thin_loc", thin.distribution, thin.deterministic)],
                        env_id,
                        explore=False,
                        **episodes,
                    )
            finally:
                algo.stop()
            record = {
                "env": args.env,
                "seed": seed,
                "steps": cfg["steps"],
                "config": {"common": cfg["common"], **cfg["methods"]["fttpo"], **cert},
                "wall_s": time.perf_counter() - start,
                "command": c.command_line(),
                "machine": c.machine(),
                "final": {p: {k: float(v) for k, v in m.items()} for p, m in final.items()},
                "abstention_rate_on_dataset_states": abstention,
            }
            c.append_record(args.runs_file, record)
            summary = {
                p: (round(m["episode_return_mean"], 2), round(m["violation_rate"], 4))
                for p, m in final.items()
            }
            print(args.env, seed, summary, flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
