"""The notebooks run top to bottom (nbclient, a fresh kernel): 01 on the distributions alone,
02 on the MLflow store of a tiny toy sweep (real Tune and MLflow) named by the environment
variables FTTPO_MLFLOW_URI and FTTPO_EXPERIMENT."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import run_cli
from tests.tuning import toy_trainable

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def execute(name: str, env: dict[str, str], tmp_path: Path) -> nbformat.NotebookNode:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        NotebookClient(
            book,
            timeout=TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
    return book


def outputs(book: nbformat.NotebookNode) -> str:
    texts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts += [str(v) for v in out.get("data", {}).values()]
    return "\n".join(texts)


def test_q_gaussian_family_notebook(tmp_path: Path) -> None:
    book = execute("01_q_gaussian_family.ipynb", {}, tmp_path)
    text = outputs(book)
    assert "samples outside the support: 0" in text
    assert "image/png" in str(book.cells[3].outputs[0].data.keys())


def test_compare_runs_notebook_on_a_toy_sweep(toy_registered: str, tmp_path: Path) -> None:
    path = toy_trainable.toy_yaml(
        tmp_path / "toy_notebook.yaml", seeds=[0, 1], iterations=2, kl_weights=[0.1, 1.0]
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = run_cli(["sweep", str(path), "--mlflow-uri", uri, "--storage", str(tmp_path)]).rc
    assert rc == 0
    book = execute(
        "02_compare_runs_in_mlflow.ipynb",
        {"FTTPO_MLFLOW_URI": uri, "FTTPO_EXPERIMENT": "toy_notebook", "PYTHONPATH": os.getcwd()},
        tmp_path,
    )
    text = outputs(book)
    assert "toy_notebook" in text
    assert "kl_weight" in text and "± 0.05" in text  # the table: mean ± s.e. over two seeds
