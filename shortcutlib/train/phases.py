"""Run an objective's training phases from one command; one phase for most objectives.

Methods that need a trained teacher plan several phases (``Objective.phases``), run here in
order inside one run directory::

    <run_dir>/teacher/     the teacher (config, metrics, checkpoints)
    <run_dir>/phase_<k>/   intermediate students, when a plan has several
    <run_dir>/             the final phase, so ``mode=eval ckpt=<run_dir>`` evaluates it
    <run_dir>/phases.json  steps, throughput and wall time of every phase, and their total

``train.steps`` is the total over all phases. Each phase resumes from its own checkpoints, so
rerunning a stopped command continues where it stopped. Within a phase of a multi-phase plan the
EMA horizon is capped at a fifth of the phase's steps and the warmup at a fifth of them, so a
short phase's EMA is not dominated by its starting weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.config import RunConfig, to_yaml
from shortcutlib.domain import Domain
from shortcutlib.objectives.base import Phase, Teacher
from shortcutlib.train.loop import Run, TrainResult, build_objective, build_run, train

log = logging.getLogger(__name__)


@dataclass
class PhaseRecord:
    name: str
    steps: int
    steps_per_sec: float
    wall_s: float


@dataclass
class PhasesResult:
    result: TrainResult  # the final phase
    phases: list[PhaseRecord]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    @property
    def wall_s(self) -> float:
        return sum(p.wall_s for p in self.phases)


def plan_phases(config: RunConfig, domain: Domain) -> list[Phase]:
    return build_objective(config, domain).phases(config.train.steps)


def phase_config(config: RunConfig, phase: Phase) -> RunConfig:
    """The run config of one phase of a multi-phase plan: its steps, EMA horizon and warmup."""
    steps = phase.steps
    train_config = dataclasses.replace(
        config.train,
        steps=steps,
        ema_decay=min(config.train.ema_decay, max(1.0 - 5.0 / steps, 0.0)),
        warmup_steps=min(config.train.warmup_steps, steps // 5),
    )
    return dataclasses.replace(config, train=train_config)


def start_from(run: Run, params: Any) -> Run:
    """The run with its weights (and EMA) replaced by ``params`` and a fresh optimizer state."""
    params = jax.tree.map(jnp.copy, params)
    state = run.state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params), opt_state=run.tx.init(params))
    return dataclasses.replace(run, state=state)


def run_phases(config: RunConfig, domain: Domain, run_dir: Path) -> PhasesResult:
    """Train every phase of the objective's plan; returns the final phase."""
    run_dir = Path(run_dir)
    plan = plan_phases(config, domain)
    if len(plan) == 1:
        start = time.perf_counter()
        result = train(config, domain, run_dir, run=build_run(config, domain, plan[0].objective))
        return PhasesResult(result, [PhaseRecord(plan[0].name, plan[0].steps, result.steps_per_sec, time.perf_counter() - start)])

    records: list[PhaseRecord] = []
    previous: TrainResult | None = None
    result: TrainResult | None = None
    for phase in plan:
        phase_dir = run_dir / phase.directory
        phase_dir.mkdir(parents=True, exist_ok=True)
        cfg = phase_config(config, phase)
        (phase_dir / f"config_{phase.name}.yaml").write_text(to_yaml(cfg))
        teacher = None if previous is None else Teacher(previous.run.graphdef, previous.state.ema_params, previous.run.objective)
        data = domain
        if phase.prepare_data is not None and teacher is not None:
            start = time.perf_counter()
            data = phase.prepare_data(domain, teacher, run_dir, config.seed)
            records.append(PhaseRecord(f"{phase.name}_data", 0, float("nan"), time.perf_counter() - start))
        run = build_run(cfg, data, phase.objective)
        if phase.init_from_teacher and teacher is not None:
            run = start_from(run, teacher.params)
        log.info("Phase %s: %d steps in %s", phase.name, phase.steps, phase_dir)
        start = time.perf_counter()
        kwargs = {"teacher_params": teacher.params, "teacher_graphdef": teacher.graphdef} if phase.uses_teacher and teacher else {}
        result = train(cfg, data, phase_dir, run=run, saved_config=config, **kwargs)
        records.append(PhaseRecord(phase.name, phase.steps, result.steps_per_sec, time.perf_counter() - start))
        if result.preempted:
            break
        previous = result  # the next phase's teacher

    summary = {"phases": [dataclasses.asdict(r) for r in records], "total_steps": sum(r.steps for r in records)}
    (run_dir / "phases.json").write_text(json.dumps(summary, indent=2))
    return PhasesResult(result, records)
