"""Fixtures shared by the whole test suite.

``minari_root`` (session-wide, autouse): every test — and every subprocess a test starts, since
the variable is in ``os.environ`` — reads and writes Minari datasets in a fresh temporary
directory, never in the user's ``~/.minari`` (and caches in one, never in ``~/.cache``).

``treatment_dataset`` (session-wide): the paper's treatment dataset, collected once.

``ray_local`` (per module): a local Ray instance, started unless one is already running.
``toy_registered``: the toy trainable of ``tests/tuning/toy_trainable.py`` registered on it.
``trained`` (per module): the requesting module's FtTPO, built and trained.
``cwd``: an empty working directory (MLflow's default store is ``./mlflow.db`` there).

Helpers that take arguments (a tiny FtTPO config or YAML, the command line in-process) are
functions in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from fttpo_ray import FtTPO
from fttpo_ray.data import DatasetInfo, collect_dataset
from tests.helpers import TREATMENT_ENV, TREATMENT_ID, tiny_fttpo_config
from tests.tuning import toy_trainable

MINARI_ROOT_VARIABLE = "MINARI_DATASETS_PATH"
CACHE_VARIABLE = "XDG_CACHE_HOME"


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Minari root, exported as ``MINARI_DATASETS_PATH`` for the session, and a
    temporary user cache directory (``XDG_CACHE_HOME``: the reports' reference rows)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MINARI_ROOT_VARIABLE, str(root))
        patch.setenv(CACHE_VARIABLE, str(tmp_path_factory.mktemp("cache")))
        yield root


@pytest.fixture(scope="session")
def treatment_dataset(minari_root: Path) -> DatasetInfo:
    """The paper's treatment dataset (50 random episodes x 24 steps, seed 0). A test that ran
    earlier may have made this id on first use (``ensure_dataset``): it is collected again,
    once, so that the tests know exactly how it was made."""
    return collect_dataset(TREATMENT_ENV, "random", 50, TREATMENT_ID, seed=0, overwrite=True)


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


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest, ray_local: None) -> Iterator[tuple[FtTPO, list]]:
    """``(algorithm, results)``: :func:`tests.helpers.tiny_fttpo_config` of the requesting
    module's ``TRAINED_SETTINGS``, trained ``TRAINED_ITERATIONS`` iterations (one result each);
    stopped after the module."""
    algo = tiny_fttpo_config(request.module.TRAINED_SETTINGS).build_algo()
    try:
        results = [algo.train() for _ in range(request.module.TRAINED_ITERATIONS)]
        yield algo, results
    finally:
        algo.stop()


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; MLflow's default store is ``./mlflow.db`` there."""
    from fttpo_ray.tuning.tracking import TRACKING_URI_ENV

    path = tmp_path / "cwd"
    path.mkdir()
    monkeypatch.chdir(path)
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    return path
