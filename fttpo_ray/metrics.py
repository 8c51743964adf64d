"""Names of every metric and parameter that fttpo-ray reports (Tune results and MLflow).

The full glossary, with formulas, is ``docs/metrics.md``. In short (``P`` is ``thin`` — the
sparse acting policy — or ``fat`` — the heavy-tailed proposal):

- ``evaluation/P/episode_return_mean``: mean undiscounted return over the evaluation episodes.
- ``evaluation/P/episode_return_sem``: its standard error (sample std / sqrt(episodes)).
- ``evaluation/P/episodes`` / ``evaluation/P/episode_len_mean``: episodes evaluated, mean length.
- ``evaluation/P/normalized_score``: ``100 * (R - R_min) / (R_max - R_min)`` with the dataset's
  reference returns (Minari's ``ref_min_score`` / ``ref_max_score``), where they exist.
- ``evaluation/P/violation_rate``: share of executed actions in the prohibited set
  (docs/algorithm.md §5).
- ``evaluation/P/violations`` / ``evaluation/P/actions``: the count and its denominator.
- ``evaluation/P/violation_rate_ub95``: one-sided 95% Clopper–Pearson upper bound of the rate.
- ``evaluation/P/prohibited_mass_mean``: mean over visited states of ``pi(A_bad | s)``.
- ``evaluation/P/prohibited_mass_zero_frac``: share of visited states where that mass is exactly 0.
- ``evaluation/P/deaths_per_100_episodes``: lethal variant only.
- ``evaluation/P/boundary_action_rate``: share of action coordinates at a box bound (MuJoCo).
- ``evaluation/thin/support_halfwidth_mean``: mean thin support half-width (action units).
- ``evaluation/thin/support_outside_box_frac``: share of states whose thin support leaves the box.
- ``evaluation/certified/...``: the certified policy (``safety_certificate``), with the metrics
  above plus ``abstention_rate`` (states given the safe action), ``certified_share_mean``
  (certified share of the thin support), ``certified_width_mean`` (width of the certified
  support), ``certificate_bound_width_mean`` (``c σ̂``) and ``certificate_multiplier`` (``c``).
- Glucose simulator only (docs/metrics.md), in percent of the 3-minute glucose samples:
  ``evaluation/P/time_in_range`` (70–180 mg/dL), ``time_below_70``, ``time_below_54``,
  ``time_above_180``, and ``glucose_mean`` (mg/dL); per patient group ``G``
  (adolescent, adult, child) the same five and ``violation_rate`` and
  ``deaths_per_100_episodes`` as ``evaluation/P/<name>/G`` (:func:`group_metric`).
- ``learner/{critic,value,fat,thin}_loss``: the four losses of docs/algorithm.md §2.
- ``learner/grad_steps_per_s``: gradient steps per second of the learner in the last iteration.
"""

from __future__ import annotations

THIN = "thin"
FAT = "fat"
#: The thin policy cut to its certified support (``safety_certificate``, docs/algorithm.md §5.1).
CERTIFIED = "certified"
POLICIES = (THIN, FAT, CERTIFIED)

EVALUATION_PREFIX = "evaluation"
LEARNER_PREFIX = "learner"

EPISODE_RETURN_MEAN = "episode_return_mean"
EPISODE_RETURN_SEM = "episode_return_sem"
EPISODES = "episodes"
EPISODE_LEN_MEAN = "episode_len_mean"
NORMALIZED_SCORE = "normalized_score"
VIOLATION_RATE = "violation_rate"
VIOLATIONS = "violations"
ACTIONS = "actions"
VIOLATION_RATE_UB95 = "violation_rate_ub95"
PROHIBITED_MASS_MEAN = "prohibited_mass_mean"
PROHIBITED_MASS_ZERO_FRAC = "prohibited_mass_zero_frac"
DEATHS_PER_100_EPISODES = "deaths_per_100_episodes"
BOUNDARY_ACTION_RATE = "boundary_action_rate"
SUPPORT_HALFWIDTH_MEAN = "support_halfwidth_mean"
SUPPORT_OUTSIDE_BOX_FRAC = "support_outside_box_frac"
# The certified policy's certificate (docs/algorithm.md §5.1), means over visited states.
ABSTENTION_RATE = "abstention_rate"
CERTIFIED_SHARE_MEAN = "certified_share_mean"
CERTIFIED_WIDTH_MEAN = "certified_width_mean"
CERTIFICATE_BOUND_WIDTH_MEAN = "certificate_bound_width_mean"
CERTIFICATE_MULTIPLIER = "certificate_multiplier"

# The glucose simulator's clinical measures (percent of 3-minute samples; mean in mg/dL).
TIME_IN_RANGE = "time_in_range"
TIME_BELOW_70 = "time_below_70"
TIME_BELOW_54 = "time_below_54"
TIME_ABOVE_180 = "time_above_180"
GLUCOSE_MEAN = "glucose_mean"
#: Metrics also reported per patient group (:func:`group_metric`).
GROUP_METRICS = (
    TIME_IN_RANGE,
    TIME_BELOW_70,
    TIME_BELOW_54,
    TIME_ABOVE_180,
    GLUCOSE_MEAN,
    VIOLATION_RATE,
    DEATHS_PER_100_EPISODES,
)

CRITIC_LOSS = "critic_loss"
VALUE_LOSS = "value_loss"
FAT_LOSS = "fat_loss"
THIN_LOSS = "thin_loss"
GRAD_STEPS_PER_S = "grad_steps_per_s"


def evaluation_key(policy: str, name: str) -> str:
    """``evaluation/<policy>/<name>``, e.g. ``evaluation/thin/violation_rate``."""
    return f"{EVALUATION_PREFIX}/{policy}/{name}"


def group_metric(name: str, group: str) -> str:
    """``<name>/<group>``, e.g. ``time_in_range/child``: a metric of one patient group."""
    return f"{name}/{group}"


def learner_key(name: str) -> str:
    """``learner/<name>``, e.g. ``learner/critic_loss``."""
    return f"{LEARNER_PREFIX}/{name}"
