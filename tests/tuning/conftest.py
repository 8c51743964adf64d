"""Fixtures of the sweep tests: a local Ray shared by a module, the toy trainable registered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tests.tuning import toy_trainable


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def toy_registered(ray_local: None) -> str:
    # Tune keeps registrations in the Ray cluster's key-value store: register again on every
    # cluster (another module's fixture may have started a new one).
    toy_trainable.register()
    return toy_trainable.TOY_NAME
