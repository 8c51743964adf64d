"""Can FtTPO reach zero violations on the treatment simulator? Where its violations come from,
and a critic-certified support that removes most of them — **a proposed change to the method, not
FtTPO as specified**. Rows for ``benchmarks/results/treatment.md`` (``treatment.py report``).

For each seed, FtTPO is trained with the ``fttpo`` entry of ``benchmarks/treatment.yaml`` (same
config and steps as ``treatment.py``, evaluation off during training), then the *same* learner
module is evaluated on the same ``evaluation.final_episodes`` episodes as

- ``thin``: the thin policy as specified (stochastic), as in ``treatment.py``;
- ``thin_loc``: the thin policy's location only (deterministic). If this violates as often as
  ``thin``, the violations come from *where* the support is centred, not from its width —
  shrinking the support cannot fix them;
- ``thin_certified_m<margin>`` for each ``certified.margins``: the thin support intersected with
  the critic's certified set ``I(s)`` = the interval of doses around the location on which
  ``Q(s, a) >= Q(s, 0) + margin`` (the learned critic says "no worse than no treatment", a = 0
  being the simulator's known-safe action). If the location is certified, the half-width is cut
  so that the support stays inside ``I(s)``; otherwise the location moves to the critic's argmax
  and the same cut applies; if no dose is certified the policy gives a = 0.
  ``Q = min(Q1, Q2)`` on ``certified.grid_points`` doses.

Records are appended to ``benchmarks/results/treatment_certified_runs.jsonl``::

    .venv/bin/python benchmarks/treatment_certified.py --env normal --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import torch
from treatment import CERTIFIED_RUNS_FILE, CONFIG_FILE, ENVS, fttpo_config, load_config


def certified_params(
    module: Any, obs: torch.Tensor, margin: float, grid_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Location and half-width of the thin policy cut to the critic-certified interval."""
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
    centre = np.where(moved, q.argmax(dim=1).numpy(), centre)
    new_loc = np.where(moved, g[centre], loc_np)
    idx = np.arange(grid_points)[None, :]
    lo = np.where(~ok & (idx < centre[:, None]), idx, -1).max(axis=1) + 1
    hi = np.where(~ok & (idx > centre[:, None]), idx, grid_points).min(axis=1) - 1
    room = np.minimum(new_loc - g[lo], g[hi] - new_loc) - step
    new_hw = np.maximum(np.minimum(hw_np, room), 1e-3)
    none = ~ok[rows, centre]  # nothing certified no worse than a = 0: act a = 0
    new_loc = np.where(none, 0.0, new_loc)
    new_hw = np.where(none, 1e-3, new_hw)
    return (
        torch.as_tensor(new_loc, dtype=torch.float32).unsqueeze(-1),
        torch.as_tensor(new_hw, dtype=torch.float32).unsqueeze(-1),
    )


def certified_policy(module: Any, margin: float, grid_points: int) -> Any:
    from fttpo_ray.distributions import SparseQGaussian
    from fttpo_ray.evaluation import EvalPolicy

    def distribution(obs: torch.Tensor) -> SparseQGaussian:
        loc, hw = certified_params(module, obs, margin, grid_points)
        return SparseQGaussian(loc, hw, module.thin_q, validate_args=False)

    return EvalPolicy(f"thin_certified_m{margin:g}", distribution, lambda d: d.loc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_FILE)
    parser.add_argument("--env", choices=tuple(ENVS), required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()

    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    import fttpo_ray  # noqa: F401  (registers the envs)
    from fttpo_ray.data import ensure_dataset
    from fttpo_ray.evaluation import EvalPolicy, evaluate_policies, fttpo_policies

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
                module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
                thin = fttpo_policies(module)[0]
                certified = [
                    certified_policy(module, m, cert["grid_points"]) for m in cert["margins"]
                ]
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
            }
            with CERTIFIED_RUNS_FILE.open("a") as f:
                f.write(json.dumps(record) + "\n")
            summary = {
                p: (round(m["episode_return_mean"], 2), round(m["violation_rate"], 4))
                for p, m in final.items()
            }
            print(args.env, seed, summary, flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
