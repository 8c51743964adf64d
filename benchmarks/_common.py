"""Shared helpers of the benchmark scripts: machine description, results files, a plain PyTorch
FtTPO loop (no Ray) over the library's own ``fttpo_losses``, and the benchmark Minari root.

Benchmarks keep their datasets out of the user's Minari root: unless ``MINARI_DATASETS_PATH`` is
already set, it is set to ``BENCH_MINARI_ROOT`` (``fttpo_bench_minari`` in the system's temporary
directory) before anything imports Minari. Results name no absolute path of the machine
(:func:`portable`): the repository root, the Python installation and the temporary directory are
written as placeholders.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_MINARI_ROOT = str(Path(tempfile.gettempdir()) / "fttpo_bench_minari")
os.environ.setdefault("MINARI_DATASETS_PATH", BENCH_MINARI_ROOT)
#: torch inductor's compilation cache folder (default: one per user in the temp folder).
INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
#: Its value as the command set it (read before torch is imported: inductor sets it itself).
INDUCTOR_CACHE_SET = os.environ.get(INDUCTOR_CACHE_VARIABLE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

TREATMENT_DATASET = "fttpo/treatment/random-v0"
LETHAL_DATASET = "fttpo/treatment-lethal/random-v0"
CHEETAH_RANDOM_DATASET = "mujoco/halfcheetah/random-fttpo-v0"
CHEETAH_RANDOM_EPISODES = 100


def _git_state() -> tuple[str, bool]:
    """(HEAD commit, whether tracked files under fttpo_ray/ differ from it)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "fttpo_ray"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(dirty)


#: The commit of the code this process runs: read once at start-up, because HEAD can move
#: while a long benchmark is running.
START_COMMIT, START_DIRTY = _git_state()


def machine() -> dict[str, Any]:
    """nproc, CPU model, torch threads, load averages now, versions, git commit at start-up."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ray

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "torch_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "git_commit": START_COMMIT,
        "fttpo_ray_uncommitted_changes": START_DIRTY,
        "minari_root": portable(os.environ.get("MINARI_DATASETS_PATH", "")),
    }


def portable(text: str) -> str:
    """``text`` with this machine's locations replaced: the repository root by nothing (paths
    become relative to it), the Python installation by ``<python>``, the temporary directory by
    ``<tmp>``, the shared stand-in datasets next to the repository by ``<standins>`` and the
    home directory by ``~``."""
    places = [
        (str(REPO_ROOT.parent / "shared" / "datasets"), "<standins>"),
        (str(REPO_ROOT) + os.sep, ""),
        (sys.prefix + os.sep, "<python>" + os.sep),
        (sys.base_prefix + os.sep, "<python>" + os.sep),
        (tempfile.gettempdir() + os.sep, "<tmp>" + os.sep),
        (str(Path.home()), "~"),
    ]
    for place, placeholder in places:
        text = text.replace(place, placeholder)
    return text


def command_line() -> str:
    """The command that ran, from the repository root; the Minari root only where it is not the
    benchmarks' default, and torch inductor's cache folder where one was set (a fresh one times
    a cold compilation)."""
    root = os.environ["MINARI_DATASETS_PATH"]
    prefix = "" if root == BENCH_MINARI_ROOT else f"MINARI_DATASETS_PATH={portable(root)} "
    if INDUCTOR_CACHE_SET:
        prefix += f"{INDUCTOR_CACHE_VARIABLE}={portable(INDUCTOR_CACHE_SET)} "
    script = portable(str(Path(sys.argv[0]).resolve()))
    return prefix + " ".join(shlex.quote(a) for a in [".venv/bin/python", script, *sys.argv[1:]])


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    """``benchmarks/results/<name>.json`` and ``<name>.md`` (command, machine, tables)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    info = machine()
    payload = {"command": command_line(), "machine": info, **payload}
    text = json.dumps(payload, indent=2, default=float)
    (RESULTS_DIR / f"{name}.json").write_text(portable(text) + "\n")
    dirty = (
        " (with uncommitted changes under fttpo_ray/)"
        if info["fttpo_ray_uncommitted_changes"]
        else ""
    )
    header = (
        f"# {name}\n\n"
        f"Command (repository root): `{payload['command']}`\n\n"
        f"Git commit: `{info['git_commit']}`{dirty}\n\n"
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), torch {info['torch']}, "
        f"ray {info['ray']}, Python {info['python']}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in info['loadavg'])} (the machine is shared with other "
        f"jobs: compare only numbers measured side by side in one run).\n\n"
    )
    (RESULTS_DIR / f"{name}.md").write_text(portable(header + markdown.rstrip()) + "\n")


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one run's record as a JSON line (numpy scalars written as floats)."""
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines runs file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN for a single value)."""
    a = np.asarray(xs, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return float(a.mean()), se


def fmt_mean_se(mean: float, se: float, digits: int = 2) -> str:
    """``"mean ± se"`` with ``digits`` decimals (the mean alone where the s.e. is NaN: one
    value)."""
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def ensure_cheetah_random() -> str:
    """The HalfCheetah-v5 uniform-random dataset (``CHEETAH_RANDOM_EPISODES`` x 1 000 steps)."""
    from fttpo_ray.data import collect_dataset, dataset_exists

    if not dataset_exists(CHEETAH_RANDOM_DATASET):
        collect_dataset(
            env_id="HalfCheetah-v5",
            policy="random",
            episodes=CHEETAH_RANDOM_EPISODES,
            dataset_id=CHEETAH_RANDOM_DATASET,
            seed=0,
            reference_policy=None,
        )
    return CHEETAH_RANDOM_DATASET


def median(xs: list[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


class PlainLoop:
    """FtTPO without Ray: the learner's gradient step minus RLlib — the library's
    ``losses_and_gradients`` (critic ensemble, one backward pass), one fused Adam per optimizer
    group, ``polyak_update``, statistics summed as tensors (never read in the loop).
    ``compile`` compiles the step as the ``compile_update`` option does; ``fused=False`` (torch's
    default per-tensor Adam) and ``read_values=True`` (statistics read after every step) switch
    two of the optimisations off, for the benchmark's one-at-a-time comparison.

    ``config`` is an :class:`FtTPOConfig` (only its hyper-parameters are read).
    """

    def __init__(
        self,
        config: Any,
        observation_space: Any,
        action_space: Any,
        seed: int = 0,
        *,
        compile: bool = False,
        fused: bool = True,
        read_values: bool = False,
        device: str = "cpu",
    ):
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import (
            StepHyperParameters,
            compile_step,
            losses_and_gradients,
            optimizer_groups,
        )
        from fttpo_ray.rl_module.fttpo_rl_module import FtTPOTorchRLModule

        torch.manual_seed(seed)
        self.config = config
        self.module = (
            RLModuleSpec(
                module_class=FtTPOTorchRLModule,
                observation_space=observation_space,
                action_space=action_space,
                model_config={"fcnet_hiddens": [256, 256], **config._model_config_auto_includes},
            )
            .build()
            .to(device)
        )
        groups = optimizer_groups(self.module, config).values()
        self.params = [p for params, _ in groups for p in params]
        self.optimizers = [
            torch.optim.Adam(p, lr=lr, fused=fused or None, foreach=None if fused else False)
            for p, lr in groups
        ]
        self.read_values = read_values
        # The learner's tensor-valued hyper-parameters: the same compiled graph as the learner's.
        self.hyper = StepHyperParameters.from_config(self.module, config, torch.device(device))
        self.step_fn = compile_step(losses_and_gradients) if compile else losses_and_gradients
        self.sums: torch.Tensor | None = None

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import polyak_update

        _, named, metrics, _, grads = self.step_fn(
            self.module, batch, self.hyper, self.params, self.hyper.q
        )
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        for opt in self.optimizers:
            opt.step()
        polyak_update(self.module, self.config.polyak)
        values = torch.stack([*named.values(), *metrics.values()])
        if self.read_values:
            values.tolist()
        self.sums = values if self.sums is None else self.sums + values
        return named


class BatchSampler:
    """Uniform minibatches (with replacement) of a dataset's flat transitions, as tensors."""

    def __init__(self, dataset_id: str, batch_size: int = 256, seed: int = 0, device: str = "cpu"):
        from ray.rllib.core.columns import Columns

        from fttpo_ray.data import load_transitions

        tr = load_transitions(dataset_id)
        self.transitions = tr
        self.table = {
            Columns.OBS: torch.from_numpy(tr.obs),
            Columns.ACTIONS: torch.from_numpy(tr.actions),
            Columns.REWARDS: torch.from_numpy(tr.rewards),
            Columns.NEXT_OBS: torch.from_numpy(tr.new_obs),
            Columns.TERMINATEDS: torch.from_numpy(tr.terminateds).to(torch.bool),
        }
        self.table = {k: v.to(device) for k, v in self.table.items()}
        self.device = torch.device(device)
        self.n = len(tr)
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.n, (self.batch_size,), generator=self.gen).to(self.device)
        return {k: v[idx] for k, v in self.table.items()}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
