"""Draw the 1-D q-Gaussian family (docs/algorithm.md §1) into ``docs/q_gaussian_family.png``.

Run from anywhere with the project's environment::

    .venv/bin/python docs/make_q_gaussian_figure.py [--out PATH]

All curves share the textbook form ``p(x) ∝ exp_q(-x^2)`` (beta = 1, so every density has the
same curvature of ``log p`` at its mode), which fixes each class's scale parameter:

* sparse, q < 1: ``SparseQGaussian`` with support half-width ``sqrt(1/(1-q))``;
* Gaussian, q = 1: ``Normal(0, 1/sqrt(2))``;
* heavy-tailed, 1 < q < 3: ``HeavyTailedQGaussian`` with Student-t scale ``1/sqrt(3-q)``.

The left panel is linear and marks where the sparse densities reach exactly zero; the right
panel is logarithmic: sparse densities stop at their support ends, fat ones decay polynomially.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fttpo_ray.distributions import HeavyTailedQGaussian, SparseQGaussian  # noqa: E402

QS = (-1.0, 0.0, 0.5, 1.0, 2.0)
COLOURS = {-1.0: "#08519c", 0.0: "#3182bd", 0.5: "#6baed6", 1.0: "#333333", 2.0: "#de2d26"}
DEFAULT_OUT = Path(__file__).resolve().parent / "q_gaussian_family.png"


def _distribution(q: float) -> SparseQGaussian | HeavyTailedQGaussian:
    """The 1-D q-Gaussian with density ∝ exp_q(-x^2), as one of the two classes."""
    zero = torch.zeros(1, dtype=torch.float64)
    if q < 1.0:
        half_width = math.sqrt(1.0 / (1.0 - q))
        return SparseQGaussian(zero, torch.full_like(zero, half_width), q)
    return HeavyTailedQGaussian(zero, torch.full_like(zero, 1.0 / math.sqrt(3.0 - q)), q)


def _label(q: float) -> str:
    if q < 1.0:
        half_width = math.sqrt(1.0 / (1.0 - q))
        return f"q = {q:g}: sparse, support ±{half_width:.2f}"
    if q == 1.0:
        return "q = 1: Gaussian"
    return f"q = {q:g}: heavy-tailed (Student-t, ν = {(3 - q) / (q - 1):g})"


def make_figure(out: Path) -> Path:
    """Draw the two panels and write the PNG to ``out``; returns ``out``."""
    fig, (ax_lin, ax_log) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for q in QS:
        dist = _distribution(q)
        colour = COLOURS[q]
        for ax, half_range in ((ax_lin, 3.0), (ax_log, 8.0)):
            x = torch.linspace(-half_range, half_range, 4001, dtype=torch.float64)
            if q < 1.0:
                # Include the support ends themselves so that the drop to 0 is drawn exactly.
                edge = float(dist.scale[0])
                x = torch.cat([x, torch.tensor([-edge, edge], dtype=x.dtype)]).sort().values
            density = dist.log_prob(x.unsqueeze(-1)).exp()
            ax.plot(x, density, color=colour, lw=2.0, label=_label(q) if ax is ax_lin else None)
            if q < 1.0:
                low, high = dist.support_bounds()
                for end in (float(low[0]), float(high[0])):
                    ax.axvline(end, color=colour, lw=0.8, ls=":")
                    if ax is ax_lin:
                        ax.plot([end], [0.0], marker="o", ms=5, color=colour, clip_on=False)
    ax_lin.set(xlim=(-3, 3), ylim=(0, None), xlabel="x", ylabel="density p(x)")
    ax_lin.set_title("linear scale: sparse densities are exactly 0 past the dots")
    fig.legend(loc="outside lower center", ncol=3, fontsize=9, title="p(x) ∝ exp_q(−x²)")
    ax_log.set_yscale("log")
    ax_log.set(xlim=(-8, 8), ylim=(1e-5, 2.0), xlabel="x", ylabel="density (log scale)")
    ax_log.set_title("log scale: finite support (q < 1) vs polynomial tails (q > 1)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    args = parser.parse_args()
    print(f"wrote {make_figure(args.out)}")


if __name__ == "__main__":
    main()
