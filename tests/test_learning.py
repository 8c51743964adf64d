"""Learning test (layer: learning): FtTPO's thin policy beats the random behaviour policy on the
treatment simulator within a small budget, and violates far less often than it.

Calibration (``benchmarks/treatment.py``, ``benchmarks/results/treatment_runs.jsonl``): with the
``fttpo`` entry of ``benchmarks/treatment.yaml`` (gamma 0.9, tau 0.1, batch 256), after 1 000
gradient steps the thin policy's return on the 200 evaluation episodes used here (seeds
1 000 000 + i) was +2.6 to +3.3 over seeds 0–4 (s.e. ≈ 0.7 per run) with violation rates 0.12 to
0.18; the uniform-random behaviour policy returns −8.68 (the dataset's reference score, 1 000
episodes) and violates at 0.58 (on the benchmark's 1 000 episodes). The assertions keep a wide
margin below those numbers so that the test fails only when learning breaks:

- thin return > random's + ``RETURN_MARGIN`` = 8 (i.e. > ≈ −0.7, below no treatment's +0.23 on
  the benchmark's episodes; 4.7 s.e. below the worst calibrated seed, 11 s.e. above random);
- thin violation rate < ``MAX_VIOLATION_RATE`` = 0.30 (worst calibrated seed 0.18; random 0.58).

Zero violations is **not** asserted: FtTPO as specified does not reach it. Its thin support is
centred on the fat proposal's location, and the location itself commits most of the
violations (``benchmarks/treatment_certified.py``: the deterministic location violates at
0.215, the stochastic thin policy at 0.234), because the prohibited set depends on the hidden
mean and covariance that the policy does not observe and nothing in the loss penalises
prohibited doses.
See ``benchmarks/results/treatment.md``.

Runtime: 61 s (``pytest -m learning``, including collecting the dataset and its reference
scores) on the shared 2-CPU benchmark machine at load average ≈ 8.
"""

from __future__ import annotations

import pytest
import torch

import fttpo_ray
from fttpo_ray.data import ensure_dataset, load_transitions
from fttpo_ray.defaults import EVALUATION_SEED

DATASET = "fttpo/treatment/random-v0"
STEPS = 1000
EPISODES = 200
RETURN_MARGIN = 8.0
MAX_VIOLATION_RATE = 0.30


@pytest.mark.learning
def test_fttpo_thin_policy_beats_random_behaviour_on_treatment(ray_local: None) -> None:
    ensure_dataset(DATASET)
    random_return = load_transitions(DATASET).ref_min_score
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        algo = (
            fttpo_ray.FtTPOConfig()
            .dataset(DATASET)
            .training(
                gamma=0.9,
                kl_weight=0.1,
                train_batch_size_per_learner=256,
                num_gradient_steps_per_iteration=STEPS,
            )
            .evaluation(
                evaluation_interval=1,
                evaluation_duration=EPISODES,
                evaluation_seed=EVALUATION_SEED,
            )
            .debugging(seed=0)
            .build_algo()
        )
        try:
            thin = algo.train()["evaluation"]["thin"]
        finally:
            algo.stop()
    finally:
        torch.set_num_threads(threads)

    assert thin["episode_return_mean"] > random_return + RETURN_MARGIN, (thin, random_return)
    assert thin["violation_rate"] < MAX_VIOLATION_RATE, thin
