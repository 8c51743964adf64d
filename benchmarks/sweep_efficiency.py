"""Sweep efficiency: how much of a sweep's core time the learners spend updating.

``efficiency = (sum over trials of the learner's own update time) / (wall time x cores)``

One ``fttpo sweep`` of an experiment YAML (``run_sweep`` and the report, as the CLI runs them),
in a fresh storage and MLflow folder, on a local Ray of all the machine's CPUs (the
"cores"), with one more Tune
callback that stamps, on the driver's clock, each trial's start, each result's arrival and each
trial's end. From those stamps and the results, the core time is broken down into:

- ``learner``: the learner's update (``timers/learner_update_timer``, every algorithm);
- ``evaluation``: the evaluation inside ``train()`` (``timers/evaluation_iteration``);
- ``rest of train()``: the rest of each ``train()`` (sampling the batches, FtTPO's held-out
  selection, metrics): ``time_this_iter_s`` minus the two above;
- ``between results``: gaps between a trial's results not spent in ``train()`` (reporting,
  checkpoints), and from Tune's ``on_trial_start`` to the first result less that ``train()``;
- ``trial end``: from its last result to Tune's ``on_trial_complete`` (final checkpoint, stop);
- the rest of ``wall x cores``, the time a core holds no started trial. Tune calls
  ``on_trial_start`` once the trial's actor is constructed (its process, imports, the
  algorithm's build and dataset), so that set-up falls here. Trials are laid on the cores in
  order of start (each on the core freed last before it), and this time is split into
  ``before the first trial`` (from the call of ``run_sweep``: Ray's start, the dataset, the
  MLflow run, the first trials' set-up), ``trial set-up`` (from the end of a core's trial to
  the start of its next one: the next actor's start and set-up, Tune's scheduling, a run's
  start) and ``after the last trial`` (cores whose work ended before the sweep's; the report).

RLlib logs its timers as exponential moving averages (coefficient 0.01, the first value
as is); each iteration's own time is recovered from consecutive values:
``x_n = (v_n - 0.99 v_(n-1)) / 0.01`` (for FtTPO this equals, to the printed digits, the
iteration's steps / ``learner/grad_steps_per_s``, which it logs unsmoothed).

One record per measured sweep is appended to ``results/sweep_efficiency_runs.jsonl`` (with a
``label``, e.g. before/after a change); the summary ``results/sweep_efficiency.md`` shows them
all::

    .venv/bin/python benchmarks/sweep_efficiency.py tune_configs/quickstart.yaml --label before
    .venv/bin/python benchmarks/sweep_efficiency.py benchmarks/treatment_q_slice.yaml \
        --iterations 2 --label after --set compile_update=true
    .venv/bin/python benchmarks/sweep_efficiency.py --summary-only
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, str(c.REPO_ROOT))

from ray.tune import Callback  # noqa: E402

RUNS_FILE = c.RESULTS_DIR / "sweep_efficiency_runs.jsonl"
EMA_COEFF = 0.01
LEARNER_TIMER = "learner_update_timer"
EVALUATION_TIMER = "evaluation_iteration"
PARTS = (
    "learner",
    "evaluation",
    "rest of train()",
    "between results",
    "trial end",
    "before the first trial",
    "trial set-up",
    "after the last trial",
)


class TrialClock(Callback):
    """Driver-clock stamps of every trial: start, each result (with its times), end."""

    def __init__(self) -> None:
        self.trials: dict[str, dict[str, Any]] = {}

    def _trial(self, trial: Any) -> dict[str, Any]:
        return self.trials.setdefault(
            trial.trial_id,
            {"algorithm": trial.trainable_name, "start": None, "end": None, "results": []},
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)["start"] = time.time()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        timers = result.get("timers") or {}
        self._trial(trial)["results"].append(
            {
                "at": time.time(),
                "iter_s": float(result.get("time_this_iter_s") or 0.0),
                LEARNER_TIMER: timers.get(LEARNER_TIMER),
                EVALUATION_TIMER: timers.get(EVALUATION_TIMER),
            }
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial)["end"] = time.time()

    on_trial_error = on_trial_complete


def own_times(values: list[float | None]) -> list[float]:
    """Each iteration's own time from RLlib's moving average of it (0 where it was not logged
    or did not change: no such work that iteration)."""
    out, previous = [], None
    for v in values:
        if v is None:
            out.append(0.0)
            continue
        if previous is None:
            out.append(float(v))
        elif v == previous:
            out.append(0.0)
        else:
            out.append(max(0.0, (v - (1.0 - EMA_COEFF) * previous) / EMA_COEFF))
        previous = v
    return out


def core_gaps(
    intervals: list[tuple[float, float]], start: float, end: float, cores: int
) -> tuple[float, float, float]:
    """(before the first trial, between trials, after the last) summed over ``cores``: the
    trials laid on the cores in order of start, each on the core freed last before it."""
    free_at, used = [start] * cores, [False] * cores
    before = between = 0.0
    for s, e in sorted(intervals):
        ready = [i for i in range(cores) if free_at[i] <= s]
        i = max(ready, key=free_at.__getitem__) if ready else free_at.index(min(free_at))
        gap = max(0.0, s - free_at[i])
        if used[i]:
            between += gap
        else:
            before += gap
        used[i], free_at[i] = True, max(free_at[i], e)
    return before, between, sum(end - f for f in free_at)


def breakdown(
    trials: dict[str, dict[str, Any]], start: float, wall_s: float, cores: int
) -> dict[str, Any]:
    parts = dict.fromkeys(PARTS, 0.0)
    per_algorithm: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    intervals = []
    for t in trials.values():
        results = t["results"]
        if t["start"] is None or not results:
            continue
        end = t["end"] or results[-1]["at"]
        learner = own_times([r[LEARNER_TIMER] for r in results])
        evaluation = own_times([r[EVALUATION_TIMER] for r in results])
        iter_s = [r["iter_s"] for r in results]
        parts["learner"] += sum(learner)
        parts["evaluation"] += sum(evaluation)
        parts["rest of train()"] += sum(iter_s) - sum(learner) - sum(evaluation)
        parts["between results"] += results[-1]["at"] - t["start"] - sum(iter_s)
        parts["trial end"] += end - results[-1]["at"]
        algo = per_algorithm[t["algorithm"]]
        algo["trials"] += 1
        algo["learner_s"] += sum(learner)
        algo["trial_s"] += end - t["start"]
        intervals.append((t["start"], end, t["algorithm"]))
    spans = [(s, e) for s, e, _ in intervals]
    before, between, after = core_gaps(spans, start, start + wall_s, cores)
    parts["before the first trial"] = before
    parts["trial set-up"] = between
    parts["after the last trial"] = after
    for name, algo in per_algorithm.items():
        algo["max_concurrent"] = max_overlap([(s, e) for s, e, a in intervals if a == name])
    return {
        "wall_s": wall_s,
        "cores": cores,
        "trials": len(intervals),
        "efficiency": parts["learner"] / (wall_s * cores),
        "core_s": parts,
        "per_algorithm": {k: dict(v) for k, v in per_algorithm.items()},
        "max_concurrent": max_overlap([(s, e) for s, e, _ in intervals]),
    }


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def with_settings(config: Path, settings: list[str], folder: Path) -> Path:
    """A copy of the YAML (same file name, so the same experiment name) in ``folder`` with
    every ``KEY=VALUE`` of ``settings`` (VALUE read as YAML) set in the ``config`` of each run
    of an ``FtTPO`` algorithm."""
    import yaml

    data = yaml.safe_load(config.read_text())
    for setting in settings:
        key, _, value = setting.partition("=")
        for run in data["runs"]:
            if run["algorithm"] == "FtTPO":
                run.setdefault("config", {})[key] = yaml.safe_load(value)
    copy = folder / config.name
    copy.write_text(yaml.safe_dump(data, sort_keys=True))
    return copy


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from fttpo_ray.reporting.report import write_sweep_report
    from fttpo_ray.tuning.sweep import run_sweep

    torch.set_num_threads(1)
    config = source = Path(args.config).resolve()
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="sweep_efficiency_") as tmp:
        os.chdir(tmp)  # the sweep's default storage and MLflow store: a fresh folder
        if args.set:
            config = with_settings(config, args.set, Path(tmp))
        clock = TrialClock()
        start = time.time()
        try:
            outcome = run_sweep(config, iterations=args.iterations, callbacks=[clock])
            write_sweep_report(outcome)
        finally:
            wall = time.time() - start
            os.chdir(here)
    if outcome.errored or outcome.interrupted:
        sys.exit(f"sweep_efficiency.py: the sweep had {outcome.errored} failed trial(s)")
    record = {
        "label": args.label,
        "config": c.portable(str(source)),
        "iterations": args.iterations,
        "settings": args.set,
        "git_commit": c.START_COMMIT,
        "uncommitted_changes": c.START_DIRTY,
        "loadavg_end": list(os.getloadavg()),
        **breakdown(clock.trials, start, wall, os.cpu_count() or 1),
        "start": start,
        "stamps": clock.trials,
    }
    c.append_record(RUNS_FILE, record)
    return record


def summary() -> None:
    records = c.read_records(RUNS_FILE)
    lines = [
        "Core seconds of each measured sweep (see the docstring of `benchmarks/"
        "sweep_efficiency.py` for what each part holds); efficiency = learner / (wall x cores). "
        "One row per run, oldest first. The first row was recorded before the time without a "
        "trial was split into its three parts (`–`): its "
        + ", ".join(f"{r['idle_unsplit']:.0f}" for r in records if "idle_unsplit" in r)
        + " core-seconds are their sum.\n",
        "| label | config | trials | wall s | trials/hour | efficiency | "
        + " | ".join(PARTS)
        + " | most trials at once | commit | load at end |",
        "|---|---|---|---|---|---|" + "---|" * len(PARTS) + "---|---|---|",
    ]
    for r in records:
        parts = " | ".join(
            "–" if r["core_s"][p] is None else f"{r['core_s'][p]:.0f}" for p in PARTS
        )
        config = r["config"] + (f" --iterations {r['iterations']}" if r["iterations"] else "")
        config += "".join(f" --set {s}" for s in r.get("settings", []))
        lines.append(
            f"| {r['label']} | {config} | {r['trials']} | {r['wall_s']:.0f} | "
            f"{3600 * r['trials'] / r['wall_s']:.0f} | "
            f"{r['efficiency']:.2f} | {parts} | {r['max_concurrent']} | {r['git_commit'][:7]}"
            f"{'+' if r['uncommitted_changes'] else ''} | {r['loadavg_end'][0]:.1f} |"
        )
    lines.append("\nPer algorithm (trials, learner s, trial s = start to end, most at once):\n")
    for r in records:
        algos = "; ".join(
            f"{name} {int(a['trials'])} trials, learner {a['learner_s']:.0f} s, trials "
            f"{a['trial_s']:.0f} s, {int(a['max_concurrent'])} at once"
            for name, a in r["per_algorithm"].items()
        )
        lines.append(f"- {r['label']}, {r['config']}: {algos}")
    c.write_results("sweep_efficiency", {"runs": records}, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="experiment YAML")
    parser.add_argument("--label", default="", help="name of this measurement (before/after)")
    parser.add_argument("--iterations", type=int, default=None, help="as fttpo sweep's")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set KEY in the config of every FtTPO run (e.g. compile_update=true)",
    )
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.summary_only:
        if not args.config:
            parser.error("an experiment YAML is needed unless --summary-only")
        record = run(args)
        print(f"efficiency {record['efficiency']:.3f}, wall {record['wall_s']:.0f} s")
    summary()


if __name__ == "__main__":
    main()
