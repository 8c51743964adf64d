"""Tables of the treatment benchmark from its records: ``benchmarks/results/treatment.{json,md}``.

The reference rows (no treatment, uniform random, myopic oracle) are rolled out here on the same
``evaluation.final_episodes`` episodes as the recorded runs (episode ``i`` resets with
``evaluation.seed + i``); every other row comes from ``benchmarks/results/treatment_runs.jsonl``
(``treatment.py run``); the certified policy has its own report, ``treatment_safe.py``.
Nothing is trained::

    .venv/bin/python benchmarks/treatment_report.py
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
from treatment import CONFIG_FILE, ENVS, RUNS_FILE, load_config

from fttpo_ray.evaluation.reference import constant_dose_reference
from fttpo_ray.rl_module.variants import VARIANTS


def reference_rollouts(env_id: str, episodes: int, seed: int) -> dict[str, dict[str, float]]:
    """No treatment (a = 0), uniform random, myopic oracle, on episodes ``seed + i``."""
    import gymnasium as gym

    from fttpo_ray.evaluation.safety import clopper_pearson_upper

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    policies = {
        "no treatment (a = 0)": lambda e: np.zeros(1, np.float32),
        "uniform random (behaviour)": lambda e: rng.uniform(-1.0, 1.0, size=1).astype(np.float32),
        "myopic oracle": lambda e: np.asarray(e.myopic_oracle_action(), np.float32).reshape(1),
    }
    out = {}
    for name, act in policies.items():
        returns, violations, actions, deaths = [], 0, 0, 0
        for i in range(episodes):
            env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                a = act(env.unwrapped)
                violations += int(env.unwrapped.prohibited(a)[0])
                actions += 1
                _, r, term, trunc, _ = env.step(a)
                total += float(r)
                deaths += int(term)
                done = term or trunc
            returns.append(total)
        r = np.asarray(returns)
        out[name] = {
            "episode_return_mean": float(r.mean()),
            "episode_return_sem": float(r.std(ddof=1) / math.sqrt(len(r))),
            "violations": float(violations),
            "actions": float(actions),
            "violation_rate": violations / actions,
            "violation_rate_ub95": clopper_pearson_upper(violations, actions),
            "deaths_per_100_episodes": 100.0 * deaths / episodes,
        }
    env.close()
    return out


def _policy_row(label: str, finals: list[dict], seeds: list[int], score: Any) -> dict[str, Any]:
    """Pooled safety counts and mean ± s.e. over seeds of one policy's final evaluations."""
    from fttpo_ray.evaluation.safety import clopper_pearson_upper

    v = int(sum(f["violations"] for f in finals))
    n = int(sum(f["actions"] for f in finals))
    last = c.mean_se([f["episode_return_mean"] for f in finals])
    return {
        "policy": label,
        "seeds": seeds,
        "return_last": last,
        "score_last": score(last[0]),
        "violations": v,
        "actions": n,
        "violation_rate": v / n,
        "violation_rate_ub95": clopper_pearson_upper(v, n),
        "prohibited_mass_mean": c.mean_se([f["prohibited_mass_mean"] for f in finals]),
        "prohibited_mass_zero_frac": float(
            np.mean([f["prohibited_mass_zero_frac"] for f in finals])
        ),
        "support_halfwidth_mean": (
            c.mean_se([f["support_halfwidth_mean"] for f in finals])
            if "support_halfwidth_mean" in finals[0]
            else None
        ),
        "deaths_per_100_episodes": c.mean_se([f["deaths_per_100_episodes"] for f in finals]),
    }


def _safety_cells(row: dict[str, Any], lethal: bool) -> str:
    hw = row["support_halfwidth_mean"]
    return (
        f"{row['violations']}/{row['actions']} | {row['violation_rate']:.4f} | "
        f"{row['violation_rate_ub95']:.4f} | "
        f"{c.fmt_mean_se(*row['prohibited_mass_mean'], digits=3)} | "
        f"{row['prohibited_mass_zero_frac']:.3f} | {c.fmt_mean_se(*hw, digits=3) if hw else '–'} |"
        + (f" {c.fmt_mean_se(*row['deaths_per_100_episodes'], digits=1)} |" if lethal else "")
    )


def _seeds(seeds: list[int]) -> str:
    return ",".join(str(s) for s in sorted(seeds))


def report(config: Path, reuse_references: bool = False) -> None:
    """Write ``benchmarks/results/treatment.{json,md}`` from the records (and print the tables).

    ``reuse_references`` takes the reference rows (and the best constant dose) from the existing
    ``treatment.json`` where it was made with the same evaluation episodes, instead of rolling
    them out again."""
    import json

    import fttpo_ray  # noqa: F401

    cfg = load_config(config)
    ev = cfg["evaluation"]
    reused: dict[str, Any] = {}
    old = c.RESULTS_DIR / "treatment.json"
    if reuse_references and old.exists():
        before = json.loads(old.read_text())
        same = all(
            before["config"]["evaluation"].get(k) == ev[k] for k in ("seed", "final_episodes")
        )
        if same:
            reused = {
                key: env
                for key, env in before["envs"].items()
                if "best_constant_dose" in env and "references" in env
            }
    records = c.read_records(RUNS_FILE)
    config_path = CONFIG_FILE.relative_to(c.REPO_ROOT)
    payload: dict[str, Any] = {
        "config": cfg,
        "runs_file": str(RUNS_FILE.relative_to(c.REPO_ROOT)),
        "envs": {},
    }
    md = [
        f"Quality and safety on the treatment simulator. Hyper-parameters: `{config_path}` "
        f"(gamma {cfg['common']['gamma']}, batch {cfg['common']['train_batch_size_per_learner']}, "
        f"2x256 MLPs, {cfg['steps']} gradient steps per run). Every policy is evaluated on the "
        f"same episodes: episode i resets with seed {ev['seed']} + i; stochastic actions.\n",
        f"- **return (last)**: mean ± s.e. over seeds of each run's final "
        f"{ev['final_episodes']}-episode evaluation after **steps** gradient steps; "
        "**return (selected)**: the same for the weights of the iteration FtTPO selected by its "
        "held-out TD error (docs/algorithm.md §2.2; never on evaluation episodes; the "
        "`, selected` rows give their safety columns and the selected steps per seed); "
        "**return (best)**: mean ± s.e. over seeds of "
        f"each run's best evaluation every {ev['every']} steps on {ev['episodes']} episodes "
        "(optimistic: selected on the evaluation episodes).",
        "- **best constant dose**: the dose of a 41-point grid with the highest return on "
        "1 000 selection episodes (seeds 2 000 000 + i), reported on the evaluation episodes "
        "(`fttpo_ray.evaluation.reference.constant_dose_reference`).",
        "- **[earlier settings]**: runs of a method made with another `training` block of "
        "its entry than today's (each record holds its config and commit): for `fttpo`, the "
        "defaults before issue 11 (no held-out split, no observation standardisation).",
        "- **score** = 100 (R − R_random) / (R_oracle − R_random) with the reference rows "
        "(same episodes).",
        "- **violations**: executed doses in the prohibited set (docs/algorithm.md §5), pooled "
        "over seeds, "
        "with the one-sided 95% Clopper–Pearson upper bound; **prohibited mass**: π(A_bad | s), "
        "mean ± s.e. over seeds, and the fraction of visited states where it is exactly 0.",
        "- Per-run records (each with its command, machine, config and learning curve): "
        "`treatment_runs.jsonl`; the **seeds** column names the seeds of each row.\n",
    ]
    for env_key, (env_id, dataset_id) in ENVS.items():
        lethal = env_key == "lethal"
        previous = reused.get(env_key)
        if previous is None:
            refs = reference_rollouts(env_id, ev["final_episodes"], ev["seed"])
            const = constant_dose_reference(env_id, episodes=ev["final_episodes"], seed=ev["seed"])
            refs[f"best constant dose (a = {const.best_dose:g})"] = const.best
            const_info = {
                "dose": const.best_dose,
                "selection_seed": const.selection_seed,
                "selection_episodes": const.selection_episodes,
                "grid_on_evaluation_episodes": {
                    str(d): v["episode_return_mean"] for d, v in const.evaluation.items()
                },
            }
        else:
            refs, const_info = previous["references"], previous["best_constant_dose"]
        r_rand = refs["uniform random (behaviour)"]["episode_return_mean"]
        r_orc = refs["myopic oracle"]["episode_return_mean"]

        def score(r: float, r_rand: float = r_rand, r_orc: float = r_orc) -> float:
            return 100.0 * (r - r_rand) / (r_orc - r_rand)

        header = (
            "| policy | seeds | steps | return (last) | return (selected) | return (best) | score "
            "| violations | rate | 95% UB | prohibited mass | mass = 0 | thin half-width |"
            + (" deaths/100 ep |" if lethal else "")
        )
        md += [f"\n## {env_id} (dataset `{dataset_id}`)\n", header]
        md.append("|" + "---|" * (header.count("|") - 1))
        for name, ref in refs.items():
            md.append(
                f"| reference: {name} | – | – | "
                f"{c.fmt_mean_se(ref['episode_return_mean'], ref['episode_return_sem'])}"
                f" (s.e. over episodes) | – | – | {score(ref['episode_return_mean']):.1f} | "
                f"{int(ref['violations'])}/{int(ref['actions'])} | {ref['violation_rate']:.4f} | "
                f"{ref['violation_rate_ub95']:.4f} | – | – | – |"
                + (f" {ref['deaths_per_100_episodes']:.1f} |" if lethal else "")
            )
        rows = []
        for method, current in (
            (method, current) for method in cfg["methods"] for current in (True, False)
        ):
            method_config = {"common": cfg["common"], **cfg["methods"][method]}
            # An FtTPO variant with a thin policy labels its rows by policy (thin, fat).
            spec = VARIANTS.get(cfg["methods"][method].get("training", {}).get("variant"))
            recs = [
                r
                for r in records
                if r["env"] == env_key
                and r["method"] == method
                and same_settings(r, method, method_config) == current
            ]
            for steps, policy in (
                (steps, policy)
                for steps in sorted({r["steps"] for r in recs})
                for policy in ("thin", "fat")
            ):
                with_policy = [r for r in recs if policy in r["final"] and r["steps"] == steps]
                if not with_policy:
                    continue
                label = (
                    f"{method} ({policy})" if spec is not None and spec.has_thin else method
                ) + ("" if current else " [earlier settings]")
                row = _policy_row(
                    label,
                    [r["final"][policy] for r in with_policy],
                    [r["seed"] for r in with_policy],
                    score,
                )
                row["return_best"] = c.mean_se(
                    [max(p[policy]["episode_return_mean"] for p in r["curve"]) for r in with_policy]
                )
                row["steps"] = sorted({r["steps"] for r in with_policy})
                selected = [r for r in with_policy if "selected" in r]
                row["return_selected"] = (
                    c.mean_se([r["selected"][policy]["episode_return_mean"] for r in selected])
                    if len(selected) == len(with_policy)
                    else None
                )
                rows.append(row)
                sel = row["return_selected"]
                md.append(
                    f"| {label} | {_seeds(row['seeds'])} | {_seeds(row['steps'])} | "
                    f"{c.fmt_mean_se(*row['return_last'])} | "
                    f"{c.fmt_mean_se(*sel) if sel else '–'} | "
                    f"{c.fmt_mean_se(*row['return_best'])} | {row['score_last']:.1f} | "
                    + _safety_cells(row, lethal)
                )
                if selected and len(selected) == len(with_policy):
                    srow = _policy_row(
                        f"{label}, selected",
                        [r["selected"][policy] for r in selected],
                        [r["seed"] for r in selected],
                        score,
                    )
                    srow["selected_steps"] = [r["selected_steps"] for r in selected]
                    rows.append(srow)
                    md.append(
                        f"| {label}, selected (held-out TD error) | {_seeds(srow['seeds'])} | "
                        f"{','.join(str(x) for x in srow['selected_steps'])} | – | "
                        f"{c.fmt_mean_se(*srow['return_last'])} | – | {srow['score_last']:.1f} | "
                        + _safety_cells(srow, lethal)
                    )
        missing = [
            m
            for m in cfg["methods"]
            if not any(r["method"] == m for r in records if r["env"] == env_key)
        ]
        if missing:
            md.append(
                f"\nMethods of `{config_path}` without records for this environment: "
                + ", ".join(f"`{m}`" for m in missing)
                + " (see `benchmarks/README.md`)."
            )
        payload["envs"][env_key] = {
            "env_id": env_id,
            "best_constant_dose": const_info,
            "references": refs,
            "rows": rows,
            "methods_without_records": missing,
        }
    md.append(
        "\nPublished reference numbers (the paper's simulator code, 1 000 episodes, quoted in "
        "issue 6, not produced here): no treatment −0.30 ± 0.34, random −8.86 ± 0.31, myopic "
        "oracle +5.59 ± 0.25; the authors' FtTPO after 50 000 steps: thin −4.19 ± 0.32 with "
        "45.8% of doses worse than no treatment.\n"
    )
    curve_png = learning_curves(records, cfg, payload)
    if curve_png:
        long = payload["learning_curve"]
        md.append(
            f"\nLearning curves of `fttpo` (thin policy, the longest runs: seeds "
            f"{_seeds(long['seeds'])}, {long['steps'][-1]:.0f} steps; {long['episodes']}-episode "
            f"evaluations every {long['every']} steps, mean ± s.e. over seeds; held-out TD error "
            f"on the right axis; dots: each seed's selected step): `{curve_png.name}`.\n"
        )
    text = "\n".join(md)
    print(text)
    c.write_results("treatment", payload, text)


#: Methods whose entry in treatment.yaml changed since records began to carry their config
#: (fttpo: the issue-11 defaults); other methods' records without one are today's settings.
CHANGED_SINCE_LEGACY_RECORDS = frozenset({"fttpo"})


def same_settings(record: dict, method: str, method_config: dict) -> bool:
    """Whether a record was made with the method's current entry of treatment.yaml."""
    if "config" not in record:
        return method not in CHANGED_SINCE_LEGACY_RECORDS
    return record["config"] == method_config


def learning_curves(records: list[dict], cfg: dict[str, Any], payload: dict) -> Path | None:
    """``treatment_curve.png``: the thin return of ``fttpo`` (current config, normal env) against
    gradient steps, with the held-out TD error and the best constant dose; ``None`` without
    such records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = {"common": cfg["common"], **cfg["methods"]["fttpo"]}
    recs = [
        r
        for r in records
        if r["method"] == "fttpo" and r["env"] == "normal" and same_settings(r, "fttpo", config)
    ]
    if not recs:
        return None
    longest = max(r["steps"] for r in recs)
    recs = [r for r in recs if r["steps"] == longest]
    steps = sorted({p["steps"] for r in recs for p in r["curve"]})
    seeds = [r["seed"] for r in recs]

    def series(get: Any) -> tuple[np.ndarray, np.ndarray]:
        values = [[get(p) for p in r["curve"]] for r in recs]
        length = min(len(v) for v in values)
        stats = [c.mean_se([v[i] for v in values]) for i in range(length)]
        return np.array([m for m, _ in stats]), np.array([e for _, e in stats])

    ret, ret_se = series(lambda p: p["thin"]["episode_return_mean"])
    viol, _ = series(lambda p: p["thin"]["violation_rate"])
    xs = np.array(steps[: len(ret)])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, ret, color="C0", label="fttpo thin: return")
    ax.fill_between(xs, ret - ret_se, ret + ret_se, color="C0", alpha=0.25)
    const = payload["envs"]["normal"]["best_constant_dose"]
    best = payload["envs"]["normal"]["references"]
    best_name = next(k for k in best if k.startswith("best constant dose"))
    ax.axhline(
        best[best_name]["episode_return_mean"],
        color="k",
        ls="--",
        label=f"{best_name} ({cfg['evaluation']['final_episodes']} ep.)",
    )
    ax.axhline(best["no treatment (a = 0)"]["episode_return_mean"], color="grey", ls=":")
    for r in recs:
        if "selected_steps" in r:
            point = next(p for p in r["curve"] if p["steps"] == r["selected_steps"])
            ax.plot(r["selected_steps"], point["thin"]["episode_return_mean"], "o", color="C3")
    ax.set_xlabel("gradient steps")
    episodes = recs[0].get("evaluation", cfg["evaluation"])["episodes"]
    ax.set_ylabel(f"return ({episodes} evaluation episodes)")
    twin = ax.twinx()
    if all("selection" in p for r in recs for p in r["curve"]):
        td, _ = series(lambda p: p["selection"]["td_error"])
        twin.plot(xs, td, color="C2", label="held-out TD error")
    twin.plot(xs, viol * 10, color="C1", ls="-.", label="violation rate x 10")
    twin.set_ylabel("held-out TD error; violation rate x 10")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.set_title(f"FtTPO on TreatmentSim-v0, seeds {_seeds(seeds)} (best dose {const['dose']:g})")
    fig.tight_layout()
    path = c.RESULTS_DIR / "treatment_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    payload["learning_curve"] = {
        "png": path.name,
        "steps": xs.tolist(),
        "thin_return": ret.tolist(),
        "thin_return_se": ret_se.tolist(),
        "thin_violation_rate": viol.tolist(),
        "seeds": seeds,
        "episodes": episodes,
        "every": recs[0].get("evaluation", cfg["evaluation"])["every"],
    }
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_FILE)
    parser.add_argument(
        "--reuse-references",
        action="store_true",
        help="take the reference rows from the existing treatment.json (same episodes)",
    )
    args = parser.parse_args()
    report(args.config, args.reuse_references)


if __name__ == "__main__":
    main()
