"""The training loop: build, resume, step, log, checkpoint, and survive preemption."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from shortcutlib import parallel
from shortcutlib.checkpoint import Checkpointer
from shortcutlib.config import RunConfig, as_dict, instantiate
from shortcutlib.domain import Domain
from shortcutlib.objectives.base import Objective, ObjectiveContext, stage_index
from shortcutlib.train.logging import MetricsLogger, supersede
from shortcutlib.train.state import TrainState, create_train_state, make_optimizer
from shortcutlib.train.step import make_train_step

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN/inf (with ``train.on_nonfinite=stop``)."""


@dataclass
class Run:
    """What a run is built of, for training and for evaluation from a checkpoint."""

    objective: Objective
    graphdef: nnx.GraphDef
    state: TrainState
    tx: Any


@dataclass
class TrainResult:
    run: Run
    state: TrainState
    preempted: bool
    steps_per_sec: float


def build_objective(config: RunConfig, domain: Domain) -> Objective:
    """The configured objective, told the facts it needs from the data and the training length."""
    context = ObjectiveContext(num_classes=domain.num_classes, class_dropout=config.train.class_dropout, total_steps=config.train.steps)
    return instantiate(config.objective, context)


def build_run(config: RunConfig, domain: Domain, objective: Objective | None = None) -> Run:
    objective = objective or build_objective(config, domain)
    rngs = nnx.Rngs(config.seed)
    model = objective.adapt_backbone(domain.make_backbone(config.model, rngs), rngs)
    tx = make_optimizer(config.train)
    graphdef, state = create_train_state(model, tx, config.seed)
    return Run(objective, graphdef, state, tx)


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


def encoded_batches(
    domain: Domain, batch_size: int, seed: int, start_batch: int, rows: slice | None = None
) -> Iterator[dict[str, Any]]:
    """Encoded training batches; with ``rows``, only those rows of every global batch are kept
    (and encoded): a process's share of a global batch that every process draws alike."""
    for batch in domain.train_data(batch_size, seed, start_batch=start_batch):
        x, cond = batch["x"], batch.get("cond")
        if rows is not None:
            x = np.asarray(x)[rows]
            cond = jax.tree.map(lambda a: np.asarray(a)[rows], cond)
        yield {"x": np.asarray(domain.codec.encode(x), np.float32), "cond": cond}


def state_shardings(state: TrainState, mesh: Any, min_size: int) -> TrainState:
    """Params, EMA and optimizer state by the FSDP rule; step and RNG replicated."""
    rep = parallel.replicated(mesh)
    return TrainState(
        step=rep,
        params=parallel.tree_shardings(state.params, mesh, min_size),
        ema_params=parallel.tree_shardings(state.ema_params, mesh, min_size),
        opt_state=parallel.tree_shardings(state.opt_state, mesh, min_size),
        rng=rep,
    )


def sharded_train_step(
    run: Run,
    config: RunConfig,
    mesh: Any,
    shardings: TrainState,
    teacher_shardings: Any = None,
    teacher_graphdef: nnx.GraphDef | None = None,
    objective: Objective | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The train step of ``objective`` (default: the run's) jitted with explicit shardings: state in and
    out on ``shardings`` (donated), batch split over (data, fsdp), metrics replicated."""
    step = make_train_step(
        run.graphdef,
        objective or run.objective,
        run.tx,
        ema_decay=config.train.ema_decay,
        teacher_graphdef=teacher_graphdef,
        skip_nonfinite=config.train.on_nonfinite == "skip",
    )
    return parallel.jit_sharded(
        step,
        (shardings, parallel.batch_sharding(mesh), teacher_shardings),
        (shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )


class FiniteWatch:
    """Collects each step's ``finite`` flag without waiting on the device, and checks them
    in one fetch at log and checkpoint steps, so no non-finite state is ever saved."""

    def __init__(self, mode: str, ckpt: Checkpointer):
        self.mode, self.ckpt = mode, ckpt
        self.pending: list[tuple[int, jax.Array]] = []
        self.last_good: int | None = ckpt.latest_step()
        self.skipped = 0  # in this call of train()

    def add(self, done: int, metrics: dict[str, jax.Array]) -> None:
        self.pending.append((done, metrics["finite"]))

    def check(self) -> None:
        """Raise on the first non-finite step (stop mode), else count the skipped updates."""
        if not self.pending:
            return
        flags = parallel.to_host([f for _, f in self.pending])
        bad = [done for (done, _), f in zip(self.pending, flags) if not bool(f)]
        self.pending = []
        if bad and self.mode == "stop":
            where = self.ckpt.directory / str(self.last_good) if self.last_good is not None else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"Non-finite loss or gradients at step {bad[0]}. Last good checkpoint: {where}. "
                "Lower train.lr, set train.grad_clip, or set train.on_nonfinite=skip to skip such updates."
            )
        if bad:
            log.warning("Skipped %d update(s) with a non-finite loss or gradients (first at step %d).", len(bad), bad[0])
        self.skipped += len(bad)


def train(
    config: RunConfig,
    domain: Domain,
    run_dir: Path,
    *,
    run: Run | None = None,
    teacher_params: Any = None,
    teacher_graphdef: nnx.GraphDef | None = None,
    saved_config: RunConfig | None = None,
) -> TrainResult:
    """Train ``config.train.steps`` steps in total, resuming from ``run_dir/checkpoints`` if present.

    Distillation objectives get a frozen teacher through ``teacher_params`` (and
    ``teacher_graphdef`` when its architecture differs from the student's). The state lives
    on a (data, fsdp) mesh from ``config.parallel``; with several processes every process calls
    this with the same config and ``run_dir`` (a shared file system), each feeding its own
    rows of every global batch, and only process 0 writes metrics. Checkpoints carry
    ``saved_config`` (default ``config``): a phase of a multi-phase run saves the run's own.
    """
    parallel.initialize_distributed(config.parallel)
    run_dir = Path(run_dir)
    run = run or build_run(config, domain)
    settings = config.train
    total = settings.steps
    global_size = settings.batch_size
    mesh = parallel.make_mesh(config.parallel)
    parallel.check_batch_size(global_size, mesh)
    shardings = state_shardings(run.state, mesh, config.parallel.fsdp_min_size)
    state = parallel.place(run.state, shardings)

    ckpt = Checkpointer(run_dir / "checkpoints", max_to_keep=settings.keep_checkpoints)
    if ckpt.latest_step() is not None:
        # The placed state is the restore target: the checkpoint lands on this run's mesh,
        # whatever mesh wrote it.
        state, meta, restored_step = ckpt.restore(state)
        domain.load_state(meta.get("domain") or {})
        log.info("Resumed from step %d in %s.", restored_step, ckpt.directory)
    start = int(parallel.to_host(state.step))
    meta = {"domain": domain.state(), "config": as_dict(saved_config or config)}

    teacher_shardings = None
    if teacher_params is not None:
        teacher_shardings = parallel.tree_shardings(teacher_params, mesh, config.parallel.fsdp_min_size)
        teacher_params = parallel.place(teacher_params, teacher_shardings)
    stages = run.objective.stages()
    step_fns: dict[int, Callable[..., tuple[TrainState, dict[str, jax.Array]]]] = {}  # compiled on first use

    def step_fn_at(step: int) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
        k = stage_index(stages, step)
        if k not in step_fns:
            step_fns[k] = sharded_train_step(run, config, mesh, shardings, teacher_shardings, teacher_graphdef, stages[k][1])
        return step_fns[k]

    is_main = jax.process_index() == 0
    if is_main:
        supersede(run_dir / "metrics.jsonl", start)  # a resumed run rewrites the steps after its checkpoint
    logger = MetricsLogger(
        run_dir, wandb=config.logging.wandb, tensorboard=config.logging.tensorboard, config=meta["config"], enabled=is_main
    )
    log_every = settings.log_every
    ckpt_every = settings.ckpt_every
    watch = FiniteWatch(settings.on_nonfinite, ckpt)
    rows = parallel.local_rows(global_size, mesh) if jax.process_count() > 1 else None
    batches = encoded_batches(domain, global_size, config.seed, start, rows)
    # Queued steps can deadlock the all-reduce of fake CPU devices: wait on each step there.
    block_each_step = jax.default_backend() == "cpu" and mesh.size > 1
    multi_process = jax.process_count() > 1
    preempted = False
    timed_steps, timed_secs = 0, 0.0

    try:
        with PreemptionGuard() as guard, tqdm(
            total=total, initial=start, desc="train", disable=not (is_main and config.logging.progress), dynamic_ncols=True
        ) as bar:
            window_start, window_steps, window_compiles = time.perf_counter(), 0, False
            for step in range(start, total):
                # Processes must agree on where to stop; they compare flags at log steps.
                if multi_process:
                    stop = (step - start) % log_every == 0 and parallel.any_process(guard.requested)
                else:
                    stop = guard.requested
                if stop:
                    preempted = True
                    break
                batch = parallel.global_batch(next(batches), mesh, global_size)
                compiled = len(step_fns)
                state, metrics = step_fn_at(step)(state, batch, teacher_params)
                window_compiles = window_compiles or len(step_fns) > compiled
                if block_each_step:
                    jax.block_until_ready(metrics)
                watch.add(step + 1, metrics)
                window_steps += 1
                done = step + 1
                if done % log_every == 0 or done == total:
                    watch.check()
                    metrics = parallel.to_host(metrics)
                    now = time.perf_counter()
                    rate = window_steps / max(now - window_start, 1e-9)
                    if not window_compiles:  # a window that compiled a step is not timed
                        timed_steps, timed_secs = timed_steps + window_steps, timed_secs + (now - window_start)
                    window_start, window_steps, window_compiles = now, 0, False
                    loss = float(metrics["loss"])
                    logger.log(done, {**metrics, "steps_per_sec": rate, "skipped_updates": watch.skipped})
                    bar.set_postfix(loss=f"{loss:.4f}", steps_per_s=f"{rate:.1f}")
                bar.update(1)
                if ckpt_every and done % ckpt_every == 0 and done != total:
                    watch.check()
                    ckpt.save(done, state, meta)
                    watch.last_good = done
            watch.check()
            final_step = int(parallel.to_host(state.step))
            if final_step > start or ckpt.latest_step() != final_step:
                ckpt.save(final_step, state, meta, force=True)
    finally:
        ckpt.close()
        logger.close()
    steps_per_sec = timed_steps / timed_secs if timed_secs > 0 else float("nan")
    return TrainResult(run=run, state=state, preempted=preempted, steps_per_sec=steps_per_sec)
