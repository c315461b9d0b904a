"""The training loop: build, resume, step, log, checkpoint, and survive preemption."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from domains.base import Domain
from shortcutlib.checkpoint import Checkpointer
from shortcutlib.objectives import get_objective, make_config
from shortcutlib.train.logging import MetricsLogger
from shortcutlib.train.state import TrainState, create_train_state, make_optimizer
from shortcutlib.train.step import make_train_step

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Run:
    """What a run is built of, for training and for evaluation from a checkpoint."""

    objective: ModuleType
    objective_cfg: Any
    graphdef: nnx.GraphDef
    state: TrainState
    tx: Any


@dataclass
class TrainResult:
    run: Run
    state: TrainState
    preempted: bool
    steps_per_sec: float


def build_run(cfg: DictConfig, domain: Domain) -> Run:
    objective = get_objective(cfg.objective.name)
    context = {"num_classes": domain.num_classes, "class_dropout": float(cfg.domain.get("class_dropout", 0.0))}
    objective_cfg = make_config(objective, OmegaConf.to_container(cfg.objective, resolve=True), context)
    model = domain.make_backbone(cfg.model, nnx.Rngs(int(cfg.seed)))
    tx = make_optimizer(cfg.train)
    graphdef, state = create_train_state(model, tx, int(cfg.seed))
    return Run(objective, objective_cfg, graphdef, state, tx)


def domain_state(domain: Domain) -> dict[str, Any]:
    get = getattr(domain, "state", None)
    return (get() or {}) if callable(get) else {}


def restore_domain_state(domain: Domain, state: dict[str, Any]) -> None:
    load = getattr(domain, "load_state", None)
    if callable(load) and state:
        load(state)


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps, so the run saves
    a checkpoint at the current step and exits cleanly instead of dying mid-write."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("Received signal %d: saving a checkpoint and stopping.", signum)
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def encoded_batches(domain: Domain, batch_size: int, seed: int, start_batch: int) -> Iterator[dict[str, Any]]:
    for batch in domain.train_data(batch_size, seed, start_batch=start_batch):
        yield {"x": np.asarray(domain.codec.encode(batch["x"]), np.float32), "cond": batch.get("cond")}


def train(cfg: DictConfig, domain: Domain, run_dir: Path, *, run: Run | None = None, teacher: Any = None) -> TrainResult:
    """Train ``cfg.train.steps`` steps in total, resuming from ``run_dir/checkpoints`` if present."""
    run_dir = Path(run_dir)
    run = run or build_run(cfg, domain)
    tcfg = cfg.train
    total = int(tcfg.steps)
    ckpt = Checkpointer(run_dir / "checkpoints", max_to_keep=int(tcfg.get("keep_checkpoints", 3)))
    state = run.state
    if ckpt.latest_step() is not None:
        state, meta, restored_step = ckpt.restore(state)
        restore_domain_state(domain, meta.get("domain", {}))
        log.info("Resumed from step %d in %s.", restored_step, ckpt.directory)
    start = int(state.step)
    meta = {"domain": domain_state(domain), "config": OmegaConf.to_container(cfg, resolve=True)}

    step_fn = jax.jit(
        make_train_step(run.graphdef, run.objective, run.objective_cfg, run.tx, ema_decay=float(tcfg.ema_decay), teacher=teacher),
        donate_argnums=0,
    )
    logger = MetricsLogger(
        run_dir,
        wandb=bool(cfg.logging.get("wandb", False)),
        tensorboard=bool(cfg.logging.get("tensorboard", False)),
        config=meta["config"],
    )
    log_every = max(int(tcfg.log_every), 1)
    ckpt_every = int(tcfg.get("ckpt_every", 0) or 0)
    nonfinite = str(tcfg.get("on_nonfinite", "stop"))
    batches = encoded_batches(domain, int(tcfg.batch_size), int(cfg.seed), start)
    preempted = False
    timed_steps, timed_secs = 0, 0.0
    last_good = ckpt.latest_step()

    with PreemptionGuard() as guard, tqdm(
        total=total, initial=start, desc="train", disable=not cfg.logging.get("progress", True), dynamic_ncols=True
    ) as bar:
        window_start, window_steps = time.perf_counter(), 0
        for step in range(start, total):
            if guard.requested:
                preempted = True
                break
            state, metrics = step_fn(state, next(batches))
            window_steps += 1
            done = step + 1
            if done % log_every == 0 or done == total:
                metrics = jax.device_get(metrics)
                now = time.perf_counter()
                rate = window_steps / max(now - window_start, 1e-9)
                if step >= start + log_every:  # the first window includes compilation
                    timed_steps, timed_secs = timed_steps + window_steps, timed_secs + (now - window_start)
                window_start, window_steps = now, 0
                loss = float(metrics["loss"])
                if not math.isfinite(loss) and nonfinite == "stop":
                    ckpt.close()
                    raise NonFiniteLossError(
                        f"Non-finite loss ({loss}) by step {done}. Last good checkpoint: "
                        f"{ckpt.directory / str(last_good) if last_good is not None else 'none'}. "
                        "Lower train.lr, set train.grad_clip, or set train.on_nonfinite=skip to skip such updates."
                    )
                logger.log(done, {**metrics, "steps_per_sec": rate})
                bar.set_postfix(loss=f"{loss:.4f}", steps_per_s=f"{rate:.1f}")
            bar.update(1)
            if ckpt_every and done % ckpt_every == 0 and done != total:
                ckpt.save(done, state, meta)
                last_good = done
        final_step = int(state.step)
        if final_step > start or ckpt.latest_step() != final_step:
            ckpt.save(final_step, state, meta, force=True)
    ckpt.close()
    logger.close()
    steps_per_sec = timed_steps / timed_secs if timed_secs > 0 else float("nan")
    return TrainResult(run=run, state=state, preempted=preempted, steps_per_sec=steps_per_sec)
