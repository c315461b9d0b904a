"""Evaluation and plots shared by vector-valued domains: per-budget samples and distances."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_samples(out_dir: Path, samples: dict[int, np.ndarray], prefix: str = "samples") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, x in samples.items():
        path = out_dir / f"{prefix}_{n}steps.npy"
        np.save(path, x)
        paths.append(path)
    return paths


def scatter_grid(samples: dict[int, np.ndarray], reference: np.ndarray, path: Path, lim: float = 3.5) -> Path:
    """One 2-D scatter panel per step budget, the data in the last panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{n} step{'s' if n > 1 else ''}", x) for n, x in samples.items()] + [("data", reference)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.4))
    for ax, (title, x) in zip(np.atleast_1d(axes), panels):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_vs_steps_plot(metrics: dict[str, float], names: Sequence[str], path: Path, ylabel: str) -> Path:
    """Plot ``name@n`` metrics against n on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name in names:
        pts = sorted((int(k.split("@")[1]), v) for k, v in metrics.items() if k.split("@")[0] == name)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
