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

It does **not** assert that the thin policy beats the best constant dose (issue 11), because it
does not, and the measurements say why (``benchmarks/results/treatment.md``, docs/algorithm.md
§2.2): the best constant dose (a = 0.45, chosen on 1 000 separate simulated episodes) returns
5.17 ± 0.25 on the evaluation episodes, and the noisy observation carries almost nothing more:
the best *linear* policy found with unlimited simulator access is a near-constant dose returning
5.15 and the myopic oracle, which sees the hidden state, 5.58
(``benchmarks/results/treatment_attainable.md``). From the dataset's 1 200 transitions even the
dose is poorly identified: the argmax of a quadratic reward fit is 0.58 (10–90 % over episode
bootstraps: 0.43 to 0.89), whose expected return is 3.42, while a dose of 0.7 already returns
only 3.24. FtTPO's
thin policy with the shipped defaults (weights selected on held-out episodes) returns 2.5 on
those episodes.

Zero violations is **not** asserted: FtTPO as specified does not reach it. Its thin support is
centred on the fat proposal's location, and the location itself commits most of the
violations (measured before issue 11 with the since-removed fixed-margin benchmark: the
deterministic location violated at 0.215, the stochastic thin policy at 0.234), because the
prohibited set depends on the hidden mean and covariance that the policy does not observe
and nothing in the loss penalises prohibited doses. The certified thin support
(docs/algorithm.md §5.1, ``benchmarks/results/treatment_safe.md``) is the option that bounds
violations.

Runtime: 61 s (``pytest -m learning``, including collecting the dataset and its reference
scores) on the shared 2-CPU benchmark machine at load average ≈ 8. With the issue-11 defaults
(20 % of the episodes held out, observations standardised; the calibration above predates them)
it passed in 4 min 50 s at load average ≈ 20 (80 s of CPU time).
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
