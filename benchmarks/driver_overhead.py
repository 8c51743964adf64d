"""Driver overhead toward scale: a Tune sweep of trials that do no training (each only reports
``--iterations`` FtTPO-shaped results) through the sweep's real callbacks (the MLflow tracking
callback and the progress lines) into a local ``mlflow server`` (SQLite store, 127.0.0.1).

Measured per mode, for ``--trials`` trials: wall time, results per second, the driver's CPU
seconds per result (its process time: what one driver core spends on each result, so
``1 / cpu_per_result`` is the result rate one driver core sustains), the MLflow requests the
callback made per result and the wall time it spent in them. Modes: ``batched`` (the callback as
shipped: one ``log_batch`` per run and flush, every second) and ``per_result`` (a flush after
every result: one request per result, as before batching). Trials reuse their actors
(``reuse_actors=True``) so that starting processes does not hide the driver; each trial asks
for ``--cpus-per-trial`` CPUs of ``ray.init(num_cpus=--num-cpus)``.

One record per finished run is appended to ``results/driver_overhead_runs.jsonl``; the
summary (``results/driver_overhead.md``) is rewritten after each.

    .venv/bin/python benchmarks/driver_overhead.py --trials 1000 --modes batched per_result
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, str(c.REPO_ROOT))

RUNS_FILE = c.RESULTS_DIR / "driver_overhead_runs.jsonl"
BATCHED = "batched"
PER_RESULT = "per_result"
FLUSH_INTERVALS = {BATCHED: 1.0, PER_RESULT: 0.0}
#: A trial reporting every this many seconds (a short FtTPO iteration) for the capacity line.
REPORT_PERIOD_S = 10.0
#: The sweep size the results project to (the issue's scale).
PROJECTED_TRIALS = 1000
TRAINABLE_NAME = "fttpo_noop_reporter"
#: Where the callback makes its log_batch / set_terminated requests (before this commit: in the
#: driver's thread, records without the field).
WRITES = "background thread"


def reporting_trainable(config: dict[str, Any]) -> None:
    """Reports ``config["iterations"]`` FtTPO-shaped results as fast as Tune takes them."""
    from ray import tune

    from fttpo_ray import metrics as m

    seed = int(config["seed"])
    for iteration in range(1, int(config["iterations"]) + 1):
        tune.report(
            {
                m.EVALUATION_PREFIX: {
                    policy: {
                        m.EPISODE_RETURN_MEAN: iteration + 0.1 * seed,
                        m.EPISODE_RETURN_SEM: 0.1,
                        m.VIOLATION_RATE: 0.1,
                        m.NORMALIZED_SCORE: 50.0,
                        m.PROHIBITED_MASS_MEAN: 0.0,
                    }
                    for policy in (m.THIN, m.FAT)
                },
                m.LEARNER_PREFIX: {m.CRITIC_LOSS: 1.0 / iteration, m.GRAD_STEPS_PER_S: 80.0},
            }
        )


def run_once(args: argparse.Namespace, mode: str, uri: str, storage: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient
    from ray import tune

    from fttpo_ray.tuning.progress import ProgressCallback
    from fttpo_ray.tuning.runtime import located
    from fttpo_ray.tuning.tracking import MLflowTrackingCallback, RunContext, experiment_id

    client = MlflowClient(uri)
    name = f"driver_overhead_{mode}_{args.trials}_{int(time.time())}"
    exp_id = experiment_id(client, name, uri)
    parent = client.create_run(exp_id, run_name="sweep").info.run_id
    context = RunContext(
        experiment_id=exp_id,
        parent_run_id=parent,
        run_name="noop",
        algorithm="noop",
        env="fttpo/TreatmentSim-v0",
        dataset_id=c.TREATMENT_DATASET,
        yaml_keys={"seed": "seed"},
        searched=("seed",),
        sweep_dir=storage,
        log_checkpoint=False,
        iterations=args.iterations,
    )
    tracking = MLflowTrackingCallback(
        tracking_uri=uri, context=context, flush_interval_s=FLUSH_INTERVALS[mode]
    )
    flush, drain = tracking.flush, tracking.drain
    spent = [0.0]

    def timed_flush(run_id: str | None = None) -> None:
        start = time.perf_counter()
        flush(run_id)
        spent[0] += time.perf_counter() - start

    def timed_drain() -> None:
        start = time.perf_counter()
        drain()
        spent[0] += time.perf_counter() - start

    tracking.flush, tracking.drain = timed_flush, timed_drain
    tune.register_trainable(TRAINABLE_NAME, reporting_trainable)
    trainable = tune.with_resources(located(TRAINABLE_NAME), {"cpu": args.cpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={
            "seed": tune.grid_search(list(range(args.trials))),
            "iterations": args.iterations,
        },
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            stop={"training_iteration": args.iterations},
            callbacks=[tracking, ProgressCallback("noop", args.iterations)],
            verbose=0,
            log_to_file=False,
        ),
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    results = args.trials * args.iterations
    # Per trial the callback also creates the run and its config.json (2 requests, counted
    # in `calls` by on_trial_start) and terminates it (1).
    return {
        "mode": mode,
        "trials": args.trials,
        "iterations": args.iterations,
        "errors": grid.num_errors,
        "num_cpus": args.num_cpus,
        "cpus_per_trial": args.cpus_per_trial,
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "results": results,
        "results_per_s": results / wall,
        "driver_cpu_ms_per_result": 1000.0 * cpu / results,
        "writes": WRITES,
        "mlflow_calls": tracking.requests,
        "mlflow_calls_per_result": tracking.requests / results,
        "mlflow_failed_requests": tracking.writer.failures,
        "mlflow_flush_wall_s": spent[0],
        "mlflow_flush_ms_per_result": 1000.0 * spent[0] / results,
        "machine": c.machine(),
        "command": c.command_line(),
    }


def summary(records: list[dict[str, Any]]) -> str:
    lines = [
        "Trials that only report FtTPO-shaped results (no training), through the sweep's "
        "MLflow tracking callback and progress lines into a local `mlflow server` (SQLite, "
        "127.0.0.1, 1 worker); actors reused. One row per run (newest last); rows whose "
        "writes were made in the driver thread ran the code before the background writer.\n",
        "| mode | MLflow writes made in | trials x iterations | wall s | results/s | "
        "driver CPU ms/result | MLflow requests/result | ms the driver waited on MLflow/result "
        "| trials reporting every 10 s one driver core serves | load avg (1 min) at end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        capacity = REPORT_PERIOD_S * 1000.0 / r["driver_cpu_ms_per_result"]
        lines.append(
            f"| {r['mode']} | {r.get('writes', 'driver thread')} | "
            f"{r['trials']} x {r['iterations']} | {r['wall_s']:.0f} | "
            f"{r['results_per_s']:.1f} | {r['driver_cpu_ms_per_result']:.2f} | "
            f"{r['mlflow_calls_per_result']:.3f} | {r['mlflow_flush_ms_per_result']:.2f} | "
            f"{capacity:.0f} | {r['machine']['loadavg'][0]:.1f} |"
        )
    lines.append(
        "\nDriver core capacity = 10 s / driver CPU time per result: the number of concurrent "
        "trials, each reporting once every 10 s, whose results one fully available driver core "
        "processes (Tune's controller, the callbacks, the MLflow client). The wall-clock "
        "results/s are lower on this shared 2-core machine, where the trial actors, the MLflow "
        "server and other jobs take the same cores."
    )
    commands = dict.fromkeys(c.portable(r["command"]) for r in records)
    lines.append("\nCommands of the rows: " + "; ".join(f"`{cmd}`" for cmd in commands) + ".")
    batched = [r for r in records if r["mode"] == BATCHED and r.get("writes") == WRITES]
    largest = max(batched, key=lambda r: r["trials"]) if batched else None
    if largest is not None and largest["trials"] < PROJECTED_TRIALS:
        r = largest
        target = PROJECTED_TRIALS * r["iterations"]
        lines.append(
            f"\nProjection to {PROJECTED_TRIALS} trials x {r['iterations']} results (not run "
            f"here: it would hold the shared machine for about "
            f"{target / r['results_per_s'] / 60:.0f} min at the rate measured): from the "
            f"largest batched run ({r['trials']} trials), {target / r['results_per_s']:.0f} s "
            f"wall at this load, {target * r['driver_cpu_ms_per_result'] / 1000:.0f} s of "
            f"driver CPU, {target * r['mlflow_calls_per_result']:.0f} MLflow requests; per-result "
            "costs are assumed constant in the trial count (compare the rows of different "
            "sizes for the trend: Tune's controller does more per step as an experiment holds "
            "more trials)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=[BATCHED, PER_RESULT])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=0.5)
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the summary of the recorded runs"
    )
    args = parser.parse_args()
    if args.summary_only:
        records = c.read_records(RUNS_FILE)
        c.write_results("driver_overhead", {"runs": records}, summary(records))
        return

    import ray
    import torch

    from fttpo_ray.reporting.mlflow_server import mlflow_server

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fttpo-driver-bench-") as tmp:
        # The progress lines and the library's log, as `fttpo sweep` writes them (to a file).
        logging.basicConfig(level=logging.INFO, filename=str(Path(tmp) / "driver.log"))
        with mlflow_server(Path(tmp)) as server:
            for mode in args.modes:
                ray.init(
                    num_cpus=args.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
                try:
                    record = run_once(args, mode, server.uri, str(Path(tmp) / "ray_results"))
                finally:
                    ray.shutdown()
                c.append_record(RUNS_FILE, record)
                print(
                    f"{mode}: {record['results']} results in {record['wall_s']:.1f} s "
                    f"({record['results_per_s']:.1f}/s), driver CPU "
                    f"{record['driver_cpu_ms_per_result']:.2f} ms/result, MLflow "
                    f"{record['mlflow_calls_per_result']:.3f} requests/result",
                    flush=True,
                )
                records = c.read_records(RUNS_FILE)
                c.write_results("driver_overhead", {"runs": records}, summary(records))


if __name__ == "__main__":
    main()
