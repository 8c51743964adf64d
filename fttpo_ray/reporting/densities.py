"""Thin vs fat policy densities at a few states of the treatment simulator (a report plot).

For a few FtTPO trials of a sweep (one per run and variant, lowest seed) the final checkpoint is
downloaded from MLflow and its RLModule loaded without Ray; at the states of one
evaluation-style episode (the first evaluation episode, reset with
:data:`~fttpo_ray.defaults.EVALUATION_SEED`; mid-range doses in between)
each policy's density is drawn over the dose range, with the doses that the safety oracle
prohibits at that state shaded. The sparse (thin) policy's density is exactly 0 outside its
support; the heavy-tailed (fat) one never is. Treatment simulators only: the glucose
environment's episodes have too few decisions for these states (and its oracle costs ~20 ms
per dose), so its report has no density plot.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fttpo_ray import metrics as m  # noqa: E402
from fttpo_ray.data.envs import make_env  # noqa: E402
from fttpo_ray.data.policies import find_module_checkpoint  # noqa: E402
from fttpo_ray.defaults import EVALUATION_SEED  # noqa: E402
from fttpo_ray.envs.glucose import GlucoseBolusEnv  # noqa: E402
from fttpo_ray.errors import ConfigError  # noqa: E402
from fttpo_ray.reporting.columns import RUN_ID, ReportData  # noqa: E402
from fttpo_ray.reporting.plots import DPI  # noqa: E402
from fttpo_ray.tuning.tracking import (  # noqa: E402
    ALGORITHM_PARAM,
    CHECKPOINT_ARTIFACT_DIR,
    ENV_PARAM,
    RUN_PARAM,
    SEED_PARAM,
    VARIANT_PARAM,
)
from fttpo_ray.tuning.trainables import KIND_FTTPO, trainable_kind  # noqa: E402

logger = logging.getLogger(__name__)

DENSITIES_PNG = "densities.png"
#: Trials drawn (rows of the figure) and states per trial (columns).
MAX_TRIALS = 4
#: The states are those at these steps of one episode.
STATE_STEPS = (0, 6, 12)
#: Points of the dose grid.
GRID_POINTS = 801
COLOURS = {m.THIN: "tab:blue", m.FAT: "tab:orange"}
STYLES = {m.THIN: "-", m.FAT: "--"}


def load_module(checkpoint_dir: Path) -> Any:
    """The learner's full RLModule of an algorithm checkpoint (no Ray needed)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(find_module_checkpoint(checkpoint_dir).resolve()))


def module_policies(module: Any) -> list[Any]:
    """The thin and/or fat evaluation policies of an FtTPO module (as its variant has them)."""
    from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies

    return fttpo_policies(module)


def treatment_states(env_id: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(step, observation, prohibited mask on the dose grid)`` at :data:`STATE_STEPS`."""
    env = make_env(env_id)
    try:
        space = env.action_space
        grid = np.linspace(space.low[0], space.high[0], GRID_POINTS).reshape(-1, 1)
        middle = (0.5 * (space.low + space.high)).astype(space.dtype)
        obs, _ = env.reset(seed=EVALUATION_SEED)
        states = []
        for step in range(max(STATE_STEPS) + 1):
            if step in STATE_STEPS:
                mask = np.asarray(env.unwrapped.prohibited(grid), dtype=bool)
                states.append((step, np.asarray(obs, dtype=np.float32), mask))
            obs, _, terminated, truncated, _ = env.step(middle)
            if terminated or truncated:
                break
        return states
    finally:
        env.close()


def densities(policy: Any, obs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Density of ``policy`` at ``obs`` on ``grid`` (normalised actions in [-1, 1])."""
    obs_t = torch.as_tensor(np.repeat(obs[None, :], len(grid), axis=0))
    values = torch.as_tensor(grid.reshape(-1, 1), dtype=torch.float32)
    with torch.no_grad():
        log_prob = policy.distribution(obs_t).log_prob(values)
    return torch.exp(log_prob).reshape(-1).double().numpy()


def _is_fttpo(algorithm: str) -> bool:
    """Whether the trainable registered as ``algorithm`` is FtTPO (or a subclass of it)."""
    try:
        return trainable_kind(algorithm) == KIND_FTTPO
    except ConfigError:  # a trainable registered only in the process that ran the sweep
        return False


def _pick_trials(trials: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in (RUN_PARAM, VARIANT_PARAM) if c in trials]
    ordered = trials.assign(_seed=trials[SEED_PARAM].astype(float)).sort_values([*keys, "_seed"])
    first = ordered.drop_duplicates(keys) if keys else ordered.head(1)
    return first.head(MAX_TRIALS)[[RUN_ID, *keys, SEED_PARAM]]


def plot_policy_densities(data: ReportData, out: Path) -> list[Path]:
    """Write :data:`DENSITIES_PNG` into ``out``; ``[]`` if the environment has no oracle."""
    from mlflow.tracking import MlflowClient

    trials = data.trials
    if trials.empty or ENV_PARAM not in trials or ALGORITHM_PARAM not in trials:
        return []
    env_id = str(trials[ENV_PARAM].dropna().iloc[0])
    probe = make_env(env_id)
    has_oracle = hasattr(probe.unwrapped, "prohibited") and probe.action_space.shape == (1,)
    glucose = isinstance(probe.unwrapped, GlucoseBolusEnv)
    low, high = float(probe.action_space.low[0]), float(probe.action_space.high[0])
    probe.close()
    if not has_oracle:
        logger.info("No density plot: %s has no safety oracle with a 1-D dose", env_id)
        return []
    if glucose:
        logger.info("No density plot: %s is the glucose simulator (treatment states only)", env_id)
        return []
    client = MlflowClient(tracking_uri=data.tracking_uri)
    fttpo = {name for name in trials[ALGORITHM_PARAM].dropna().unique() if _is_fttpo(str(name))}
    on_env = trials[(trials[ENV_PARAM] == env_id) & trials[ALGORITHM_PARAM].isin(fttpo)]
    with_checkpoint = on_env[
        [bool(client.list_artifacts(r, CHECKPOINT_ARTIFACT_DIR)) for r in on_env[RUN_ID]]
    ]
    if with_checkpoint.empty:
        logger.info("No density plot: no FtTPO trial on %s has a checkpoint artifact", env_id)
        return []
    chosen = _pick_trials(with_checkpoint)
    states = treatment_states(env_id)
    grid = np.linspace(-1.0, 1.0, GRID_POINTS)
    doses = low + (grid + 1.0) * 0.5 * (high - low)
    jacobian = 2.0 / (high - low)

    fig, axes = plt.subplots(
        len(chosen),
        len(states),
        figsize=(3.4 * len(states), 2.5 * len(chosen) + 0.6),
        squeeze=False,
        sharex=True,
    )
    with tempfile.TemporaryDirectory(prefix="fttpo-densities-") as tmp:
        for row, trial in enumerate(chosen.to_dict("records")):
            local = client.download_artifacts(trial[RUN_ID], CHECKPOINT_ARTIFACT_DIR, tmp)
            module = load_module(Path(local))
            policies = module_policies(module)
            label = (
                " ".join(str(trial[c]) for c in (RUN_PARAM, VARIANT_PARAM) if c in trial)
                + f" seed {trial[SEED_PARAM]}"
            )
            for col, (step, obs, mask) in enumerate(states):
                ax = axes[row][col]
                _shade(ax, doses, mask)
                for policy in policies:
                    ax.plot(
                        doses,
                        densities(policy, obs, grid) * jacobian,
                        STYLES.get(policy.name, "-"),
                        color=COLOURS.get(policy.name),
                        lw=1.4,
                        label=f"{policy.name} policy",
                    )
                ax.set_xlim(low, high)
                ax.set_ylim(bottom=0.0)
                ax.set_title(f"{label}\nstate at step {step}", fontsize=8)
                if col == 0:
                    ax.set_ylabel("density")
                if row == len(chosen) - 1:
                    ax.set_xlabel("dose")
                ax.grid(alpha=0.3)
    handles, labels = _legend_entries(axes)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Policy densities on {env_id} (shaded: prohibited doses)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = out / DENSITIES_PNG
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return [path]


def _shade(ax: Any, doses: np.ndarray, mask: np.ndarray) -> None:
    ax.fill_between(
        doses,
        0,
        1,
        where=mask,
        transform=ax.get_xaxis_transform(),
        color="tab:red",
        alpha=0.15,
        lw=0,
        label="prohibited doses",
    )


def _legend_entries(axes: np.ndarray) -> tuple[list[Any], list[str]]:
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries.keys())
