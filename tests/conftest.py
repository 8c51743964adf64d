"""Fixtures shared by the whole test suite.

``minari_root`` (session-wide, autouse): every test — and every subprocess a test starts, since
the variable is in ``os.environ`` — reads and writes Minari datasets in a fresh temporary
directory, never in the user's ``~/.minari``.

``ray_local`` (per module): a local Ray instance, started unless one is already running.
``toy_registered``: the toy trainable of ``tests/tuning/toy_trainable.py`` registered on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tests.tuning import toy_trainable

MINARI_ROOT_VARIABLE = "MINARI_DATASETS_PATH"


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Minari root, exported as ``MINARI_DATASETS_PATH`` for the session."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MINARI_ROOT_VARIABLE, str(root))
        yield root


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
