"""Gradient steps per second of the FtTPO learner (batch 256, 2x256 MLPs), measured side by side.

(a) ``plain``: a plain PyTorch loop over the library's ``fttpo_losses`` + Adam + polyak, same
    module class, no Ray (``benchmarks/_common.py:PlainLoop``).
(b) ``rllib``: ``FtTPO.train()`` with evaluation off; we report the learner's own
    ``learner/grad_steps_per_s`` (update time only) and the rate over the whole ``train()`` call
    (which also includes drawing the minibatches).
(c) FLOPs of one update (``torch.utils.flop_counter.FlopCounterMode``, forward + backward of a
    plain step) times (a)'s steps/s, against the rate of a plain ``256 x 256 @ 256 x 256`` matmul
    on the same thread(s).

Variants, each interleaved with its comparison partners (repeats alternate, medians reported):
torch threads 1 vs 2 (local learner), ``num_learners`` 0 vs 1 (1 thread), the in-memory data
path vs the Ray Data path (``in_memory_max_transitions=100``), on the treatment data (8-d obs,
1-d action, 1 200 transitions) and a HalfCheetah-v5 random dataset (17-d obs, 6-d action,
100 000 transitions). Finally a cProfile of (b) for ``--profile-steps`` steps.

    .venv/bin/python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from typing import Any

import _common as c
import torch
from torch.utils.flop_counter import FlopCounterMode

DATASETS = {"treatment": c.TREATMENT_DATASET, "halfcheetah": c.CHEETAH_RANDOM_DATASET}


def matmul_rate(seconds: float = 2.0) -> float:
    """FLOP/s of ``(256 x 256) @ (256 x 256)`` in float32 on the current torch threads."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    for _ in range(50):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            a @ b
        n += 50
    return n * 2 * 256**3 / (time.perf_counter() - start)


def update_flops(loop: c.PlainLoop, sampler: c.BatchSampler) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        loop.step(sampler())
    return int(counter.get_total_flops())


def build_algo(dataset_id: str, seed: int, steps: int, **extra: Any):
    import fttpo_ray

    config = (
        fttpo_ray.FtTPOConfig()
        .dataset(dataset_id)
        .training(gamma=0.99, num_gradient_steps_per_iteration=steps, **extra.pop("training", {}))
        .evaluation(evaluation_interval=None)
        .debugging(seed=seed)
    )
    if "num_learners" in extra:
        config.learners(num_learners=extra["num_learners"])
    return config.build_algo()


def time_plain(loop: c.PlainLoop, sampler: c.BatchSampler, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loop.step(sampler())
    return steps / (time.perf_counter() - start)


def time_rllib(algo: Any) -> tuple[float, float]:
    """(learner grad steps/s, whole train() steps/s)."""
    steps = algo.config.num_gradient_steps_per_iteration
    start = time.perf_counter()
    result = algo.train()
    wall = time.perf_counter() - start
    return float(result["learner"]["grad_steps_per_s"]), steps / wall


def plain_for(dataset_id: str) -> tuple[c.PlainLoop, c.BatchSampler]:
    import fttpo_ray
    from fttpo_ray.data import dataset_spaces

    obs_space, act_space = dataset_spaces(dataset_id)
    cfg = fttpo_ray.FtTPOConfig().training(gamma=0.99)
    return c.PlainLoop(cfg, obs_space, act_space), c.BatchSampler(dataset_id)


def compare(
    name: str, contenders: dict[str, Any], repeats: int, warmup: bool = True
) -> dict[str, Any]:
    """Interleave the contenders ``repeats`` times; medians of steps/s per contender, the
    median of the per-repeat ratios of each contender to the first one (measured back to back,
    so the least sensitive to the machine's varying load), and the 1-minute load average before
    and after."""
    load_start = os.getloadavg()[0]
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    if warmup:
        for fn in contenders.values():
            fn()
    for _ in range(repeats):
        for k, fn in contenders.items():
            samples[k].append(fn())
    out: dict[str, Any] = {k: {"median": c.median(v), "samples": v} for k, v in samples.items()}
    first = next(iter(samples))
    out["paired_ratio_median"] = {
        k: c.median([x / y for x, y in zip(v, samples[first], strict=True)])
        for k, v in samples.items()
        if k != first
    }
    out["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    print(
        name,
        {k: round(out[k]["median"], 2) for k in samples},
        out["paired_ratio_median"],
        out["loadavg_1min"],
        flush=True,
    )
    return out


def plain_contender(loop: c.PlainLoop, sampler: c.BatchSampler, steps: int) -> Any:
    return lambda: time_plain(loop, sampler, steps)


def rllib_contender(algo: Any, walls: list[float]) -> Any:
    """Learner steps/s of one ``train()``; appends the whole call's steps/s to ``walls``."""

    def run() -> float:
        learner, wall = time_rllib(algo)
        walls.append(wall)
        return learner

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed repeat (1 thread)")
    parser.add_argument(
        "--steps-2threads", type=int, default=100, help="steps per repeat, 2 threads"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=300)
    args = parser.parse_args()

    import ray

    import fttpo_ray  # noqa: F401
    from fttpo_ray.data import ensure_dataset

    ensure_dataset(c.TREATMENT_DATASET)
    c.ensure_cheetah_random()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {"args": vars(args), "loadavg_start": list(os.getloadavg())}
    try:
        # ---- (a) vs (b), local learner, 1 vs 2 threads; (c) FLOP rates -----------------------
        for threads in (1, 2):
            torch.set_num_threads(threads)
            steps = args.steps if threads == 1 else args.steps_2threads
            mm = matmul_rate()
            results[f"matmul_flops_per_s_{threads}t"] = mm
            for ds, dataset_id in DATASETS.items():
                loop, sampler = plain_for(dataset_id)
                flops = update_flops(loop, sampler)
                algo = build_algo(dataset_id, 0, steps)
                walls: list[float] = []
                try:
                    out = compare(
                        f"{ds} {threads}t",
                        {
                            "plain": plain_contender(loop, sampler, steps),
                            "rllib": rllib_contender(algo, walls),
                        },
                        args.repeats,
                    )
                finally:
                    algo.stop()
                plain = out["plain"]["median"]
                out["rllib_train_wall"] = {"median": c.median(walls[1:]), "samples": walls[1:]}
                out["ratio_rllib_over_plain"] = out["rllib"]["median"] / plain
                out["ratio_rllib_train_wall_over_plain"] = out["rllib_train_wall"]["median"] / plain
                out["flops_per_update"] = flops
                out["plain_flops_per_s"] = flops * plain
                out["plain_flop_rate_over_matmul"] = flops * plain / mm
                results[f"{ds}_{threads}t"] = out
        torch.set_num_threads(1)

        # ---- num_learners 0 vs 1 (1 thread; the remote learner gets 1 CPU) -------------------
        for ds, dataset_id in DATASETS.items():
            loop, sampler = plain_for(dataset_id)
            local = build_algo(dataset_id, 0, args.steps)
            remote = build_algo(dataset_id, 0, args.steps, num_learners=1)
            local_walls: list[float] = []
            remote_walls: list[float] = []
            try:
                out = compare(
                    f"{ds} learners",
                    {
                        "plain": plain_contender(loop, sampler, args.steps),
                        "num_learners_0": rllib_contender(local, local_walls),
                        "num_learners_1": rllib_contender(remote, remote_walls),
                    },
                    args.repeats,
                )
            finally:
                local.stop()
                remote.stop()
            out["train_wall_num_learners_0"] = c.median(local_walls[1:])
            out["train_wall_num_learners_1"] = c.median(remote_walls[1:])
            results[f"{ds}_learners"] = out

        # ---- in-memory vs Ray Data path (HalfCheetah, 1 thread, local learner) ---------------
        dataset_id = c.CHEETAH_RANDOM_DATASET
        loop, sampler = plain_for(dataset_id)
        in_memory = build_algo(dataset_id, 0, args.steps)
        start = time.perf_counter()
        streaming = build_algo(
            dataset_id, 0, args.steps, training={"in_memory_max_transitions": 100}
        )
        build_streaming = time.perf_counter() - start
        memory_walls: list[float] = []
        data_walls: list[float] = []
        try:
            out = compare(
                "halfcheetah data path",
                {
                    "plain": plain_contender(loop, sampler, args.steps),
                    "in_memory": rllib_contender(in_memory, memory_walls),
                    "ray_data": rllib_contender(streaming, data_walls),
                },
                args.repeats,
            )
        finally:
            in_memory.stop()
            streaming.stop()
        out["train_wall_in_memory"] = c.median(memory_walls[1:])
        out["train_wall_ray_data"] = c.median(data_walls[1:])
        out["build_s_ray_data"] = build_streaming
        results["halfcheetah_data_path"] = out

        # ---- profile of (b) ------------------------------------------------------------------
        algo = build_algo(c.TREATMENT_DATASET, 0, args.profile_steps)
        try:
            algo.train()
            profiler = cProfile.Profile()
            profiler.enable()
            algo.train()
            profiler.disable()
        finally:
            algo.stop()
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(25)
        results["profile_tottime_top25"] = buffer.getvalue()
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(40)
        results["profile_cumulative_top40"] = buffer.getvalue()
    finally:
        ray.shutdown()

    c.write_results("throughput", results, markdown(results))
    print(markdown(results))


def _load(o: dict[str, Any]) -> str:
    return f"{o['loadavg_1min'][0]:.1f} → {o['loadavg_1min'][1]:.1f}"


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    lines = [
        "Gradient steps/s (batch 256, 2x256 MLPs, FtTPO variant `fttpo`, float32, CPU). Each "
        f"comparison interleaves its contenders: one warm-up, then {a['repeats']} rounds of "
        f"{a['steps']} steps (1 thread) / {a['steps_2threads']} steps (2 threads) per contender; "
        "medians. (a) plain PyTorch loop over the library's `fttpo_losses` (same module class, "
        "Adam per network, one backward, per-step polyak; `benchmarks/_common.py:PlainLoop`); "
        "(b) `FtTPO.train()` with evaluation off — `learner/grad_steps_per_s` (update only) and "
        "the whole `train()` call (also samples the minibatches). **paired (b)/(a)**: median of "
        "the per-round ratios (back to back, the least load-sensitive figure). (c) FLOPs of one "
        "update counted by `torch.utils.flop_counter.FlopCounterMode` (forward + backward) × "
        "(a)'s steps/s, against a plain 256×256 @ 256×256 float32 matmul on the same threads. "
        "Load: the 1-minute load average at the start → end of each comparison (2 cores: above "
        "~2 every contender is slowed, 2-thread runs most).\n",
        "| data | threads | (a) plain | (b) learner | (b) train() | (b)/(a) learner "
        "| paired (b)/(a) | (b)/(a) train() | FLOPs/update | (a) GFLOP/s | matmul GFLOP/s "
        "| (a)/matmul | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for threads in (1, 2):
        mm = r[f"matmul_flops_per_s_{threads}t"]
        for ds in DATASETS:
            o = r[f"{ds}_{threads}t"]
            lines.append(
                f"| {ds} | {threads} | {o['plain']['median']:.1f} | {o['rllib']['median']:.1f} | "
                f"{o['rllib_train_wall']['median']:.1f} | {o['ratio_rllib_over_plain']:.3f} | "
                f"{o['paired_ratio_median']['rllib']:.3f} | "
                f"{o['ratio_rllib_train_wall_over_plain']:.3f} | "
                f"{o['flops_per_update'] / 1e9:.3f} G | {o['plain_flops_per_s'] / 1e9:.1f} | "
                f"{mm / 1e9:.1f} | {o['plain_flop_rate_over_matmul']:.3f} | {_load(o)} |"
            )
    lines += [
        "\nnum_learners 0 vs 1 (1 torch thread; the remote learner is a Ray actor with 1 CPU; "
        "learner steps/s, paired ratios to (a) in brackets):\n",
        "| data | (a) plain | num_learners=0 | num_learners=1 | train() =0 | train() =1 | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for ds in DATASETS:
        o = r[f"{ds}_learners"]
        p = o["paired_ratio_median"]
        lines.append(
            f"| {ds} | {o['plain']['median']:.1f} | {o['num_learners_0']['median']:.1f} "
            f"({p['num_learners_0']:.2f}) | {o['num_learners_1']['median']:.1f} "
            f"({p['num_learners_1']:.2f}) | {o['train_wall_num_learners_0']:.1f} | "
            f"{o['train_wall_num_learners_1']:.1f} | {_load(o)} |"
        )
    o = r["halfcheetah_data_path"]
    p = o["paired_ratio_median"]
    lines += [
        "\nData path on HalfCheetah random (100 000 transitions; 1 thread, local learner). "
        "`ray_data` = `in_memory_max_transitions=100` (Parquet via Ray Data + "
        "`FlatTransitionPreLearner`); paired ratios to (a) in brackets:\n",
        "| (a) plain | in-memory learner | Ray Data learner | in-memory train() "
        "| Ray Data train() | Ray Data build s | load |",
        "|---|---|---|---|---|---|---|",
        f"| {o['plain']['median']:.1f} | {o['in_memory']['median']:.1f} ({p['in_memory']:.2f}) | "
        f"{o['ray_data']['median']:.1f} ({p['ray_data']:.2f}) | {o['train_wall_in_memory']:.1f} | "
        f"{o['train_wall_ray_data']:.1f} | {o['build_s_ray_data']:.1f} | {_load(o)} |",
        f"\ncProfile of one `train()` of {a['profile_steps']} steps (treatment, 1 thread), "
        "top by own time:\n",
        "```",
        r["profile_tottime_top25"].strip(),
        "```",
        "\nTop by cumulative time:\n",
        "```",
        r["profile_cumulative_top40"].strip(),
        "```",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
