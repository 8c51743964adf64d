"""Fixtures shared by the whole test suite.

``minari_root`` (session-wide, autouse): every test — and every subprocess a test starts, since
the variable is in ``os.environ`` — reads and writes Minari datasets in a fresh temporary
directory, never in the user's ``~/.minari``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

MINARI_ROOT_VARIABLE = "MINARI_DATASETS_PATH"


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Minari root, exported as ``MINARI_DATASETS_PATH`` for the session."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MINARI_ROOT_VARIABLE, str(root))
        yield root
