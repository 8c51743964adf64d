"""Reference scores of a dataset: the returns that map to 0 and 100 in the normalised score
(``normalized_score``, docs/algorithm.md §5)."""

from __future__ import annotations


def reference_scores(dataset_id: str | None) -> tuple[float, float] | None:
    """``(ref_min, ref_max)`` returns of the dataset ``dataset_id``, where it has them."""
    if not dataset_id:
        return None
    from fttpo_ray.data import load_transitions

    transitions = load_transitions(dataset_id)
    if transitions.ref_min_score is None or transitions.ref_max_score is None:
        return None
    return float(transitions.ref_min_score), float(transitions.ref_max_score)
