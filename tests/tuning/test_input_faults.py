"""Bad inputs and faults of issue 23 that used to slip through: each ends with one line naming the
problem and the fix, a non-zero exit status, no traceback, and nothing half-written or lost.

Each test reproduces one defect of the issue's list (the number is in the test's docstring).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fttpo_ray.cli import main
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.schema import load_experiment
from tests.tuning.test_cli_errors import tiny_yaml

# ---- defect 12: small ones ------------------------------------------------------------------


def test_yaml_syntax_error_names_the_file_and_the_position(tmp_path: Path) -> None:
    """12: a syntax error named PyYAML's ``"<unicode string>"`` instead of the file."""
    path = tmp_path / "broken.yaml"
    path.write_text("seeds: [0, 1\nstop: {iterations: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "unicode string" not in message
    assert message.startswith(f"{path}, line 2, column 5: invalid YAML: ")
    assert "(while parsing a flow sequence that starts at line 1, column 8)" in message
    assert "\n" not in message


def test_yaml_syntax_error_of_a_set_value_names_the_option(tmp_path: Path) -> None:
    """12: the value of ``--set`` is named as its source, not ``"<unicode string>"``."""
    path = tiny_yaml(tmp_path / "tiny.yaml")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides=["fat_q=[1"])
    assert str(info.value).startswith("--set fat_q, line 1, column 3: invalid YAML: ")


def test_missing_metric_message_is_grammatical(tmp_path: Path) -> None:
    """12: "`scheduler` need it" now reads "`scheduler` needs it"."""
    path = tiny_yaml(tmp_path / "tiny.yaml", mode="max", scheduler={"name": "asha"})
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "`metric` is missing: `scheduler` needs it (e.g. metric: " in str(info.value)


@pytest.mark.parametrize(
    ("config", "search", "where"),
    [
        ({"actor_lr": 1e6}, None, "`runs[0].config.actor_lr` = 1000000.0"),
        ({}, {"critic_lr": {"grid_search": [3e-4, 30.0]}}, "`runs[0].search.critic_lr"),
        ({}, {"value_lr": {"loguniform": [1e-4, 5.0]}}, "`runs[0].search.value_lr.loguniform[1]`"),
    ],
)
def test_implausible_learning_rate_is_accepted_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: dict,
    search: dict | None,
    where: str,
) -> None:
    """12: ``actor_lr: 1e6`` was accepted silently; it is still valid, with a warning naming the
    key and the value."""
    path = tiny_yaml(tmp_path / "tiny.yaml", config=config, search=search)
    with caplog.at_level(logging.WARNING, logger="fttpo_ray"):
        load_experiment(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert where in warnings[0] and "learning rate above 1.0" in warnings[0]
    assert str(path) in warnings[0]


def test_plausible_learning_rates_give_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_yaml(
        tmp_path / "tiny.yaml",
        config={"actor_lr": 1.0, "critic_lr": 3e-4},
        search={"value_lr": {"grid_search": [1e-4, 1e-3]}},
    )
    with caplog.at_level(logging.WARNING, logger="fttpo_ray"):
        load_experiment(path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_cli_prints_the_learning_rate_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12: the CLI shows the warning on stderr (here before failing on an unrelated bad value,
    so that nothing is trained)."""
    monkeypatch.chdir(tmp_path)
    path = tiny_yaml(tmp_path / "tiny.yaml", config={"actor_lr": 1e6})
    rc = main(["train", str(path), "--set", "fat_q=5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "`runs[0].config.actor_lr` = 1000000.0 is a learning rate above 1.0" in err
