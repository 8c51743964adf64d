"""The ``fttpo`` command line: argument parsing only; the work is done by the library.

Errors a user can fix (:class:`fttpo_ray.errors.FttpoError`) are printed as one line on stderr
with exit status 2, never as a traceback. Progress is the library's log (INFO, on stderr);
results go to stdout, and nothing else does: whatever Ray or a library prints while a command
works goes to stderr, and the messages of Ray, Tune, RLlib and MLflow that give a user nothing
to act on are not shown (:data:`QUIET_MESSAGES`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from fttpo_ray.data.collect import DEFAULT_REFERENCE_EPISODES
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED
from fttpo_ray.errors import FttpoError

LOG_FORMAT = "%(asctime)s %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

#: Start of the warning Tune gives every PBT run without reused actors.
PBT_REUSE_ACTORS_WARNING = "Consider boosting PBT performance"
#: Logger of Ray Data's execution statistics (warns with a traceback after ``ray.shutdown``).
RAY_DATA_STATS_LOGGER = "ray.data._internal.stats"
#: Tune's INFO lines (state files written, restored) repeat what the progress lines say.
TUNE_LOGGER = "ray.tune"
MLFLOW_LOGGER = "mlflow"
#: Level of MLflow's loggers, read when mlflow is imported (its INFO lines announce the tables
#: of a new SQLite store).
MLFLOW_LOGGING_LEVEL_ENV = "MLFLOW_LOGGING_LEVEL"

#: Messages not shown, by logger: a part of each message. None is an error or a problem the user
#: could fix: Ray's note that a local cluster uses token authentication (its default), RLlib's
#: note that an algorithm runs on the new API stack (the only one this package supports; SAC's
#: config, which CQL's extends, logs its own copy), the
#: deprecation RLlib triggers itself whenever it builds an RLModule, Tune's advice to install
#: GPUtil (there is no GPU to monitor on a CPU machine), the ``Tuner.restore(...)`` hint of an
#: interrupted Tune run (the CLI prints its own ``fttpo sweep ... --resume`` command) and the
#: ``FileNotFoundError`` list of trials that had not reported when a run was interrupted (Tune
#: reads them for its result grid; the CLI's results come from MLflow), and the traceback of each
#: failed trial (the sweep's progress names the trial and its error in one line, the traceback is
#: in the trial's error file).
QUIET_MESSAGES = {
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",
    ),
    "ray.rllib.algorithms.algorithm_config": ("on the new API stack! This is the new default",),
    "ray.rllib.algorithms.sac.sac": ("on the new API stack! This is the new default",),
    "ray._common.deprecation": ("`RLModule(config=[RLModuleConfig object])` has been deprecated",),
    "ray.tune.utils.util": ("Install gputil for GPU system monitoring",),
    "ray.tune.tune": ("Resume experiment with: Tuner.restore(", "Trials did not complete"),
    "ray.tune.execution.tune_controller": ("Trial task failed for trial",),
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics for",),
}


#: Messages not shown when they are about a full disk, by logger: a part of each message. Tune
#: logs each write that failed (with a traceback) and goes on; the command ends with one line
#: naming the full disk (:class:`fttpo_ray.errors.StorageFullError`).
QUIET_WHEN_DISK_FULL = {
    "ray.tune.execution.experiment_state": ("Saving experiment state to storage",),
    "ray.train._internal.syncer": ("Last sync command failed",),
}
#: How a full disk shows in a message or a traceback (``ENOSPC``).
NO_SPACE_MESSAGE = os.strerror(errno.ENOSPC)


class _DiskFullFilter(logging.Filter):
    """Drops the records whose message contains one of ``parts`` and that are about a full
    disk (:data:`NO_SPACE_MESSAGE` in the message or its exception)."""

    def __init__(self, parts: Sequence[str]) -> None:
        super().__init__()
        self.parts = tuple(parts)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(part in message for part in self.parts):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return NO_SPACE_MESSAGE not in message and NO_SPACE_MESSAGE not in str(error or "")


class _QuietFilter(logging.Filter):
    """Drops the records whose message contains one of ``parts``."""

    def __init__(self, parts: Sequence[str]) -> None:
        super().__init__()
        self.parts = tuple(parts)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.parts)


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to ``sys.stderr`` as it is when a record is emitted, not as it
    was when the handler was made (a process that calls :func:`main` more than once, such as a
    test run, may have replaced ``sys.stderr`` in between)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """``StreamHandler`` assigns its stream; this handler always looks ``sys.stderr`` up."""


def _setup_logging() -> None:
    """INFO lines of fttpo_ray on stderr; silenced: :data:`QUIET_MESSAGES`, MLflow's and Tune's
    INFO lines, the gymnasium warnings of RLlib's internal environments and the traceback Ray
    Data's prefetch thread logs when it reports statistics after Ray has shut down (RLlib's
    offline algorithms)."""
    os.environ.setdefault(MLFLOW_LOGGING_LEVEL_ENV, logging.getLevelName(logging.WARNING))
    package = logging.getLogger("fttpo_ray")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    warnings.filterwarnings("ignore", category=UserWarning, module="gymnasium")
    # Tune's advice for PBT: PBT trials are fresh actors on purpose (sweep.reuses_actors).
    warnings.filterwarnings("ignore", message=PBT_REUSE_ACTORS_WARNING)
    logging.getLogger(MLFLOW_LOGGER).setLevel(logging.WARNING)
    logging.getLogger(TUNE_LOGGER).setLevel(logging.WARNING)
    logging.getLogger(RAY_DATA_STATS_LOGGER).setLevel(logging.ERROR)
    for name, parts in QUIET_MESSAGES.items():
        source = logging.getLogger(name)
        if not any(isinstance(f, _QuietFilter) for f in source.filters):
            source.addFilter(_QuietFilter(parts))
    for name, parts in QUIET_WHEN_DISK_FULL.items():
        source = logging.getLogger(name)
        if not any(isinstance(f, _DiskFullFilter) for f in source.filters):
            source.addFilter(_DiskFullFilter(parts))


def _where_to_look(
    uri: str, experiment: str, experiment_id: str, lines: list[tuple[str, str]]
) -> str:
    from fttpo_ray.tuning.tracking import HTTP_SCHEMES, runs_view_url

    served = uri.split(":", 1)[0] in HTTP_SCHEMES
    rows = [
        ("MLflow store", f"{uri} (experiment '{experiment}')"),
        *([] if served else [("MLflow dashboard", f"mlflow ui --backend-store-uri {uri}")]),
        ("Training runs", runs_view_url(uri, experiment_id)),
        *lines,
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _cmd_collect(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.data.collect import collect_dataset

    info = collect_dataset(
        env_id=args.env,
        policy=args.policy,
        episodes=args.episodes,
        dataset_id=args.dataset_id,
        seed=args.seed,
        overwrite=args.overwrite,
        deterministic=not args.stochastic,
        reference_policy=None if args.reference_policy == "none" else args.reference_policy,
        reference_episodes=args.reference_episodes,
        bolus_noise=args.bolus_noise,
        tasks=args.tasks,
        ray_address=args.address,
    )
    print(info, file=out)
    return 0


def _cmd_download(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.data.remote import download_dataset, ensure_mixture

    for dataset_id in args.dataset_ids:
        print(f"{dataset_id}: {download_dataset(dataset_id)}", file=out)
    if args.combine:
        print(f"mixture: {ensure_mixture(args.dataset_ids)}", file=out)
    return 0


def _cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.reporting.report import write_sweep_report
    from fttpo_ray.reporting.results import markdown
    from fttpo_ray.tuning.sweep import run_sweep

    outcome = run_sweep(
        args.config,
        address=args.address,
        mlflow_uri=args.mlflow_uri,
        storage=args.storage,
        iterations=args.iterations,
        resume=args.resume,
        max_concurrent=args.max_concurrent,
    )
    if outcome.interrupted:
        print(
            f"Sweep '{outcome.experiment}' interrupted after {outcome.wall_s:.0f} s; continue it "
            f"with: fttpo sweep {args.config} --resume"
            + (f" --storage {args.storage}" if args.storage else ""),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    report = write_sweep_report(outcome)
    print(
        f"\nResults of '{outcome.experiment}' ({outcome.trials} trials, {outcome.errored} "
        f"failed, {outcome.wall_s:.0f} s): mean ± s.e. over seeds, last evaluation\n",
        file=out,
    )
    print(
        markdown(report.compact) if not report.compact.empty else "(no evaluation results)",
        file=out,
    )
    print(file=out)
    print(
        _where_to_look(
            outcome.tracking_uri,
            outcome.experiment,
            outcome.experiment_id,
            [("Tune storage", str(outcome.sweep_dir)), ("Report", str(report.out))],
        ),
        file=out,
    )
    return 1 if outcome.errored else 0


def _cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.runs.train import train_once

    outcome = train_once(
        args.config,
        overrides=args.set,
        run=args.run,
        mlflow_uri=args.mlflow_uri,
        storage=args.storage,
        iterations=args.iterations,
        seed=args.seed,
    )
    print(json.dumps(_finite(outcome.metrics), indent=1, sort_keys=True), file=out)
    print(file=out)
    print(
        _where_to_look(
            outcome.tracking_uri,
            outcome.experiment,
            outcome.experiment_id,
            [("MLflow run", outcome.mlflow_run_id), ("Checkpoint", str(outcome.checkpoint))],
        ),
        file=out,
    )
    return 0


def _cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.runs.evaluate import evaluate

    results = evaluate(
        args.checkpoint, episodes=args.episodes, seed=args.seed, explore=not args.deterministic
    )
    print(json.dumps(_finite(results), indent=1, sort_keys=True), file=out)
    return 0


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from fttpo_ray.reporting.report import write_report
    from fttpo_ray.reporting.results import markdown

    report = write_report(args.experiment, args.out, tracking_uri=args.mlflow_uri, sweep=args.sweep)
    print(markdown(report.compact), file=out)
    print(file=out)
    for path in report.files:
        print(path, file=out)
    return 0


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and inf become null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {value}")
    return value


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mlflow-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<working directory>/mlflow.db)",
    )


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        help="directory of Tune results and checkpoints (default: ./ray_results)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fttpo",
        description="Fat-to-Thin Policy Optimization on Ray RLlib: datasets, training, sweeps, "
        "reports.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect a local Minari dataset with a behaviour policy")
    p.add_argument("--env", required=True, help="gymnasium id, e.g. fttpo/TreatmentSim-v0")
    p.add_argument(
        "--policy",
        default="random",
        help="'random', 'oracle' (treatment envs), 'basal-bolus' (glucose env: simglucose's "
        "controller with log-normal bolus noise) or an RLlib checkpoint directory",
    )
    p.add_argument(
        "--bolus-noise",
        type=float,
        default=None,
        metavar="SIGMA",
        help="basal-bolus policy only: its bolus is dose x exp(SIGMA z), z ~ N(0, 1); SIGMA in "
        "[0, 2] (default 0: the clean controller)",
    )
    p.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="glucose env only: Ray tasks collecting in parallel, each a share of the patients "
        "(default: one per patient)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="glucose env only: the Ray cluster whose cores collect (HOST:PORT, ray://HOST:PORT "
        "or 'auto'; default: a local Ray started for the collection)",
    )
    p.add_argument("--episodes", type=int, required=True, help="number of episodes (>= 1)")
    p.add_argument("--dataset-id", required=True, help="Minari id, e.g. fttpo/treatment/random-v0")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="checkpoint policies sample their actions (default: the distribution's mode)",
    )
    p.add_argument(
        "--reference-policy",
        default="auto",
        help="policy whose mean return is ref_max_score: 'auto' (the oracle for the treatment "
        "envs, none otherwise), 'oracle', a checkpoint directory or 'none'",
    )
    p.add_argument(
        "--reference-episodes",
        type=int,
        default=DEFAULT_REFERENCE_EPISODES,
        help=f"episodes per reference score (default {DEFAULT_REFERENCE_EPISODES})",
    )
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser(
        "download",
        help="download Minari datasets into the Minari root (once), e.g. ahead of a sweep",
    )
    p.add_argument(
        "dataset_ids", nargs="+", metavar="ID", help="Minari id, e.g. mujoco/halfcheetah/medium-v0"
    )
    p.add_argument(
        "--combine",
        action="store_true",
        help="also combine the ids into one local mixture (as a YAML dataset listing them does)",
    )
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser(
        "sweep",
        help="run an experiment YAML as Ray Tune experiments tracked in MLflow",
        description="Run every run of the YAML over its search block and seeds; one MLflow "
        "experiment per YAML, a parent run per sweep, one nested run per trial. Prints a "
        "results table at the end.",
    )
    p.add_argument("config", help="experiment YAML, e.g. tune_configs/quickstart.yaml")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to use: HOST:PORT, ray://HOST:PORT or 'auto' (default: a local Ray "
        "started for this sweep)",
    )
    _add_tracking_options(p)
    _add_storage_option(p)
    p.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="training iterations per trial (default: the YAML's stop.iterations)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest sweep of this YAML in --storage: finished trials are kept, "
        "interrupted ones continue from their last checkpoint, MLflow runs are reused",
    )
    p.add_argument(
        "--max-concurrent",
        type=_non_negative_int,
        default=None,
        help="trials at once (default: the YAML's max_concurrent; 0 = as many as the CPUs allow)",
    )
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "train",
        help="train one run of an experiment YAML once (its config, no search)",
        description="Train the first run of the YAML (or --run NAME) with its config block and "
        "the first seed; metrics to MLflow, a checkpoint written, final metrics printed.",
    )
    p.add_argument("config", help="experiment YAML")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of the run (fat_q=1.5) or a section key "
        "(stop.iterations=2, evaluation.episodes=10); repeatable",
    )
    p.add_argument("--run", default=None, help="name of the run in the YAML (default: the first)")
    p.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="training iterations (default: the YAML's stop.iterations)",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=None,
        help="seed (default: the first of the YAML's seeds)",
    )
    _add_tracking_options(p)
    _add_storage_option(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate an algorithm checkpoint: returns and safety metrics as JSON",
    )
    p.add_argument("checkpoint", help="algorithm checkpoint directory (fttpo train / sweep)")
    p.add_argument(
        "--episodes",
        type=_positive_int,
        default=EVALUATION_EPISODES,
        help=f"evaluation episodes (default {EVALUATION_EPISODES})",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=EVALUATION_SEED,
        help=f"seed of the first episode (default {EVALUATION_SEED}, as in training evaluations)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="act with each distribution's mode instead of sampling",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "report",
        help="results table (markdown + CSV) and PNG plots of an MLflow experiment",
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment (= the YAML's name)")
    _add_tracking_options(p)
    p.add_argument("--out", required=True, help="directory to write the report into")
    p.add_argument(
        "--sweep",
        default="latest",
        help="which sweep: 'latest' (default), 'all', or a parent run id",
    )
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    results = sys.stdout
    try:
        # Only the results go to stdout; anything else printed meanwhile (Ray's error messages
        # from its nodes, for instance) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args, results))
    except FttpoError as err:
        print(f"fttpo {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(
            f"fttpo {args.command}: error: the disk is full ({err.strerror}"
            + (f": '{err.filename}'" if err.filename else "")
            + "); free some space or write elsewhere (--storage, --out, MINARI_DATASETS_PATH)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"fttpo {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
