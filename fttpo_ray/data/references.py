"""Reference returns for normalised scores: the dataset's own, else D4RL's for the same task.

A normalised score is ``100 (R - ref_min) / (ref_max - ref_min)`` (D4RL's and Minari's
convention). :func:`dataset_references` takes ``ref_min_score``/``ref_max_score`` from the
dataset's Minari metadata when it has both, and otherwise the D4RL references of its MuJoCo task
(:data:`D4RL_REFERENCES`: random and expert returns of Fu et al. 2020, D4RL's
``infos.REF_MIN_SCORE``/``REF_MAX_SCORE``), and says which it used.
"""

from __future__ import annotations

from dataclasses import dataclass

#: D4RL's (random, expert) returns by MuJoCo task (any version of the gymnasium env id).
D4RL_REFERENCES: dict[str, tuple[float, float]] = {
    "HalfCheetah": (-280.178953, 12135.0),
    "Hopper": (-20.272305, 3234.3),
    "Walker2d": (1.629008, 4592.3),
}
#: Sources reported with a score.
SOURCE_DATASET = "dataset metadata (ref_min_score / ref_max_score)"
SOURCE_D4RL = "D4RL references (Fu et al. 2020)"


@dataclass(frozen=True)
class References:
    """Reference returns and where they come from."""

    ref_min: float
    ref_max: float
    source: str

    def normalize(self, returns: float) -> float:
        """``100 (R - ref_min) / (ref_max - ref_min)``."""
        return 100.0 * (returns - self.ref_min) / (self.ref_max - self.ref_min)


def d4rl_references(env_id: str | None) -> References | None:
    """D4RL's references of the task of ``env_id`` (``HalfCheetah-v5`` -> HalfCheetah), if any."""
    if not env_id:
        return None
    task = env_id.split("/")[-1].split("-v")[0]
    if task not in D4RL_REFERENCES:
        return None
    ref_min, ref_max = D4RL_REFERENCES[task]
    return References(ref_min, ref_max, SOURCE_D4RL)


def dataset_references(dataset_id: str) -> References | None:
    """The dataset's reference returns, else D4RL's for its task, else ``None``."""
    from fttpo_ray.data.transitions import load_transitions

    transitions = load_transitions(dataset_id)
    if transitions.ref_min_score is not None and transitions.ref_max_score is not None:
        if transitions.ref_max_score != transitions.ref_min_score:
            return References(
                float(transitions.ref_min_score), float(transitions.ref_max_score), SOURCE_DATASET
            )
    return d4rl_references(transitions.env_id)
