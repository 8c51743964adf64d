"""The ``fttpo`` command line: argument parsing only; the work is done by the library.

Errors a user can fix (:class:`fttpo_ray.errors.FttpoError`) are printed as one line on stderr
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fttpo_ray.errors import FttpoError


def _cmd_collect(args: argparse.Namespace) -> int:
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
    )
    print(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fttpo",
        description="Fat-to-Thin Policy Optimization on Ray RLlib: datasets, training, sweeps, reports.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect a local Minari dataset with a behaviour policy")
    p.add_argument("--env", required=True, help="gymnasium id, e.g. fttpo/TreatmentSim-v0")
    p.add_argument(
        "--policy",
        default="random",
        help="'random', 'oracle' (treatment envs) or an RLlib checkpoint directory",
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
        default=100,
        help="episodes per reference score (default 100)",
    )
    p.set_defaults(func=_cmd_collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FttpoError as err:
        print(f"fttpo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fttpo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
