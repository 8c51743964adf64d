"""A dataset's spaces against an environment's."""

from __future__ import annotations

import pytest

from fttpo_ray.data import DatasetInfo, check_compatible
from fttpo_ray.errors import DatasetError, EnvironmentSpecError
from tests.helpers import TREATMENT_ID


def test_check_compatible(treatment_dataset: DatasetInfo) -> None:
    check_compatible(TREATMENT_ID, "fttpo/TreatmentSimLethal-v0")  # same spaces
    with pytest.raises(DatasetError, match="observation space .* but env 'Pendulum-v1'") as err:
        check_compatible(TREATMENT_ID, "Pendulum-v1")
    assert "\n" not in str(err.value)
    with pytest.raises(EnvironmentSpecError, match="unknown environment id"):
        check_compatible(TREATMENT_ID, "Nope-v0")
