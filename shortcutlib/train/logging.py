"""Metrics to ``metrics.jsonl`` (one JSON object per line), optional wandb/tensorboard, loss plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def to_python(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        arr = np.asarray(value)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return value


class MetricsLogger:
    """Appends to metrics.jsonl (so a resumed run continues the same file) and mirrors to
    wandb or tensorboard when asked; neither is required."""

    def __init__(self, run_dir: Path, *, wandb: bool = False, tensorboard: bool = False, config: dict | None = None, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = self._tb = None
        if not enabled:
            return
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as exc:
                raise ImportError("logging.wandb=true needs wandb: pip install 'shortcutlib[logging]'.") from exc
            self._wandb = wandb_lib.init(config=config, dir=str(run_dir), resume="allow")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as exc:
                raise ImportError("logging.tensorboard=true needs tensorboardX: pip install 'shortcutlib[logging]'.") from exc
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, **to_python(metrics)}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"{kind}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def supersede(path: Path, step: int) -> int:
    """Drop the rows after ``step`` from metrics.jsonl, atomically; returns how many were dropped.

    A run killed after its last checkpoint logged steps it will train again when resumed from
    that checkpoint; without this the file would hold those steps twice.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) < len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


def read_metrics(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]


def plot_loss(metrics_path: Path, out_path: Path) -> Path | None:
    """Training loss against step (log scale), from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path, "train") if "loss" in r and math.isfinite(r["loss"])]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
