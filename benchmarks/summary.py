"""The key numbers of ``benchmarks/results/*.json`` as one table, written between the summary
markers of ``benchmarks/README.md`` (nothing else in the README is touched).

    .venv/bin/python benchmarks/summary.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pm(pair: list[float], digits: int = 2) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def throughput_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "**Learner throughput** ([throughput.md](results/throughput.md); 1 torch thread, medians "
        "of interleaved rounds; machine load in the file):\n",
        "| data | reference steps/s | plain loop, all optimisations | RLlib learner "
        "| learner / plain loop | learner FLOP rate / matmul | compiled plain loop |",
        "|---|---|---|---|---|---|---|",
    ]
    for ds in ("treatment", "halfcheetah"):
        o = r[ds]
        compiled = o["plain_all_compiled"]["median"] if "plain_all_compiled" in o else None
        lines.append(
            f"| {ds} | {o['reference']['median']:.1f} | {o['plain_all']['median']:.1f} | "
            f"{o['rllib']['median']:.1f} | {o['rllib_over_plain_all']:.2f} | "
            f"{o['flop_rate_over_matmul']['rllib']:.2f} | "
            f"{'–' if compiled is None else f'{compiled:.1f}'} |"
        )
    return lines


def sweep_lines(r: dict[str, Any]) -> list[str]:
    m = r["trials_per_hour_median"]
    one, two = m.get("1", m.get(1)), m.get("2", m.get(2))
    init = statistics.median(r["ray_init_s"])
    return [
        f"\n**Sweep scaling** ([sweep_scaling.md](results/sweep_scaling.md)): {one:.0f} trials/h "
        f"with 1 concurrent trial, {two:.0f} with 2 ({two / one:.2f}x); `ray.init` {init:.1f} s.",
    ]


def treatment_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    for env_key, env in r["envs"].items():
        lethal = env_key == "lethal"
        lines += [
            f"\n**Treatment, {env['env_id']}** ([treatment.md](results/treatment.md); return of "
            "the final 1 000-episode evaluation, mean ± s.e. over seeds):\n",
            "| policy | seeds | return | score | violation rate (95% UB) |"
            + (" deaths/100 ep |" if lethal else ""),
            "|---|---|---|---|---|" + ("---|" if lethal else ""),
        ]
        for name, ref in env["references"].items():
            lines.append(
                f"| reference: {name} | – | {ref['episode_return_mean']:.2f} | – | "
                f"{ref['violation_rate']:.3f} ({ref['violation_rate_ub95']:.3f}) |"
                + (f" {ref['deaths_per_100_episodes']:.1f} |" if lethal else "")
            )
        steps = None
        for row in env["rows"]:
            # "selected" rows belong to the run above them (same steps)
            steps = row.get("steps") or steps
            label = row["policy"] + (
                f" (run of {'/'.join(map(str, steps))} steps)" if steps else ""
            )
            lines.append(
                f"| {label} | {','.join(str(s) for s in sorted(row['seeds']))} | "
                f"{_pm(row['return_last'])} | {row['score_last']:.1f} | "
                f"{row['violation_rate']:.3f} ({row['violation_rate_ub95']:.3f}) |"
                + (f" {_pm(row['deaths_per_100_episodes'], 1)} |" if lethal else "")
            )
    return lines


def halfcheetah_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "\n**HalfCheetah-v5 stand-ins** ([halfcheetah.md](results/halfcheetah.md); "
        f"{r['config']['steps']} gradient steps per run; normalised score ×100 with the "
        "dataset's reference returns; mean ± s.e. over seeds, nan for one seed; selected: "
        "held-out TD error; deterministic: the policy's mode or mean, runs started after it was "
        "recorded):\n",
        "| dataset | policy | seeds | last return | last score | selected score | "
        "last score, deterministic |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        selected = row.get("selected_score")
        greedy = row.get("last_score_deterministic")
        greedy_text = f"{_pm(greedy, 1)} ({row['deterministic_seeds']} seeds)" if greedy else "–"
        lines.append(
            f"| {row['dataset']} | {row['method']} ({row['policy']}) | "
            f"{','.join(str(s) for s in row['seeds'])} | {_pm(row['last_return'], 0)} | "
            f"{_pm(row['last_score'], 1)} | {_pm(selected, 1) if selected else '–'} | "
            f"{greedy_text} |"
        )
    return lines


def builtins_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "\n**RLlib's offline algorithms, gradient steps/s** "
        "([throughput_builtins.md](results/throughput_builtins.md); one run, batch 256, one "
        "thread; lean: IQL/CQL via `use_lean_learner`):\n",
        "| dataset | algorithm | path | steps/s |",
        "|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['dataset']} | {row['algorithm']} | {row['path']} | {row['steps_per_s']:.2f} |"
        )
    return lines


def main() -> None:
    parts: list[str] = []
    for name, render in (
        ("throughput", throughput_lines),
        ("sweep_scaling", sweep_lines),
        ("treatment", treatment_lines),
        ("halfcheetah", halfcheetah_lines),
        ("throughput_builtins", builtins_lines),
    ):
        result = _load(name)
        parts += render(result) if result else [f"\n`results/{name}.json`: not produced yet."]
    block = "\n".join(parts)
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(block)


if __name__ == "__main__":
    main()
