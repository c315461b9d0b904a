"""Methods that need a trained teacher, run from one command: the teacher first, then the student.

An objective config with a ``teacher:`` block (``objective=consistency_distillation``,
``objective=progressive``, ``objective=reflow_two_stage``) trains in phases inside one run directory:

    <run_dir>/teacher/     phase 1: the flow-matching teacher (config, metrics, checkpoints)
    <run_dir>/pairs.npz    two-stage reflow: the teacher's (noise, sample) pairs, drawn once
    <run_dir>/phase_<k>/   progressive distillation: the intermediate students
    <run_dir>/             the final student, so ``mode=eval ckpt=<run_dir>`` evaluates it
    <run_dir>/phases.json  steps, throughput and wall time of every phase, and their total

``train.steps`` is the total over all phases: the teacher gets ``teacher.fraction`` of it and the
student phases share the rest equally. Each phase resumes from its own checkpoints, so rerunning
a stopped command continues where it stopped. Within a phase the EMA horizon is capped at a fifth
of the phase's steps and the warmup at a fifth of them, so a short phase's EMA is not dominated by
its starting weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from domains.base import Batch, Domain, IdentityCodec, infinite_batches
from shortcutlib.inference import make_sample_fn
from shortcutlib.objectives import progressive, reflow
from shortcutlib.train.loop import Run, TrainResult, build_run, domain_state, restore_domain_state, train

log = logging.getLogger(__name__)

TEACHER_KEY = "teacher"


@dataclass(frozen=True)
class TeacherSpec:
    """The ``objective.teacher`` block."""

    objective: str = "flow_matching"  # the teacher's objective
    fraction: float = 0.5  # share of train.steps spent on the teacher
    options: dict[str, Any] = field(default_factory=dict)  # the teacher objective's options
    init_student: bool = True  # start each student from its teacher's weights
    pairs: int = 20_000  # two-stage reflow: number of (noise, sample) pairs
    pair_steps: int = 128  # two-stage reflow: Euler steps the teacher draws each pair with
    pair_batch: int = 2048  # two-stage reflow: pairs drawn per call
    pair_cfg_scale: float = 1.0  # two-stage reflow: guidance when drawing conditional pairs


@dataclass
class PhaseRecord:
    name: str
    steps: int
    steps_per_sec: float
    wall_s: float


@dataclass
class PhasesResult:
    result: TrainResult  # the final student
    phases: list[PhaseRecord]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    @property
    def wall_s(self) -> float:
        return sum(p.wall_s for p in self.phases)


def is_multi_phase(cfg: DictConfig) -> bool:
    return cfg.objective.get(TEACHER_KEY) is not None


def teacher_spec(cfg: DictConfig) -> TeacherSpec:
    raw = OmegaConf.to_container(cfg.objective[TEACHER_KEY], resolve=True)
    fields = {f.name for f in dataclasses.fields(TeacherSpec)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} in objective.teacher. Accepted: {', '.join(sorted(fields))}.")
    spec = TeacherSpec(**raw)
    if not 0.0 < spec.fraction < 1.0:
        raise ValueError(f"objective.teacher.fraction must be in (0, 1), got {spec.fraction}.")
    return spec


def student_options(cfg: DictConfig) -> dict[str, Any]:
    """The student objective's options, interpolations kept so they resolve against each phase's config."""
    options = OmegaConf.to_container(cfg.objective, resolve=False)
    options.pop(TEACHER_KEY)
    return options


def student_plan(options: dict[str, Any]) -> list[dict[str, Any]]:
    """One objective config per student phase: progressive distillation halves the steps each phase."""
    if options["name"] == "progressive":
        start = int(options.get("start_steps", progressive.Config.start_steps))
        return [{**options, "phase": k} for k in range(progressive.num_phases(start))]
    return [options]


def needs_pairs(options: dict[str, Any]) -> bool:
    return options["name"] == "reflow" and options.get("mode") == "pairs"


def split_steps(total: int, fraction: float, num_students: int) -> tuple[int, list[int]]:
    """Teacher steps and the steps of each student phase; they add up to ``total``."""
    teacher = int(round(total * fraction))
    base, extra = divmod(total - teacher, num_students)
    students = [base + (1 if i < extra else 0) for i in range(num_students)]
    if teacher < 1 or min(students) < 1:
        raise ValueError(
            f"train.steps={total} is too few for a teacher ({fraction:.0%}) and {num_students} student phase(s); raise train.steps."
        )
    return teacher, students


def phase_config(cfg: DictConfig, objective: dict[str, Any], steps: int) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    out.objective = objective
    out.train.steps = steps
    out.train.ema_decay = min(float(cfg.train.ema_decay), max(1.0 - 5.0 / steps, 0.0))
    out.train.warmup_steps = min(int(cfg.train.get("warmup_steps", 0) or 0), steps // 5)
    return out


def start_from(run: Run, params: Any) -> Run:
    """The run with its weights (and EMA) replaced by ``params`` and a fresh optimizer state."""
    params = jax.tree.map(jnp.copy, params)
    state = run.state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params), opt_state=run.tx.init(params))
    return dataclasses.replace(run, state=state)


class PairedDomain:
    """Training data made of stored (noise, sample) pairs in model space; the rest is the base domain's.

    The pair's noise travels in ``cond`` (see ``shortcutlib.objectives.reflow``).
    """

    def __init__(self, base: Domain, noise: np.ndarray, samples: np.ndarray, cond: np.ndarray | None):
        self.base = base
        self.name = base.name
        self.codec = IdentityCodec()  # pairs are already in model space
        self.sample_shape = tuple(base.sample_shape)
        self.num_classes = base.num_classes
        self.noise, self.samples, self.cond = noise, samples, cond

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        return infinite_batches({"x": self.samples, "cond": reflow.pack_pairs(self.noise, self.cond)}, batch_size, seed, start_batch)

    def make_backbone(self, model_cfg: Any, rngs: nnx.Rngs) -> nnx.Module:
        return self.base.make_backbone(model_cfg, rngs)

    def state(self) -> dict[str, Any]:
        return domain_state(self.base)

    def load_state(self, state: dict[str, Any]) -> None:
        restore_domain_state(self.base, state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def draw_pairs(domain: Domain, teacher: TrainResult, spec: TeacherSpec, seed: int, path: Path) -> PairedDomain:
    """The teacher's samples from ``spec.pairs`` noise draws (cached at ``path``)."""
    if path.exists():
        data = np.load(path)
        cond = data["cond"] if "cond" in data.files else None
        return PairedDomain(domain, data["noise"], data["samples"], cond)
    sample_fn = make_sample_fn(
        teacher.run.graphdef,
        teacher.state.ema_params,
        teacher.run.objective,
        tuple(domain.sample_shape),
        cfg_scale=spec.pair_cfg_scale,
        num_classes=domain.num_classes,
    )
    chunk = min(spec.pair_batch, spec.pairs)
    total = chunk * math.ceil(spec.pairs / chunk)  # equal chunks: one compilation
    cond = domain.sample_cond(total, seed)
    cond = None if cond is None else np.asarray(cond)
    key = jax.random.PRNGKey(seed + 1)
    noise, samples = [], []
    for start in range(0, total, chunk):
        k = jax.random.fold_in(key, start)
        x0 = jax.random.normal(k, (chunk, *domain.sample_shape))
        c = None if cond is None else cond[start : start + chunk]
        samples.append(np.asarray(sample_fn(k, spec.pair_steps, chunk, c, x0)))
        noise.append(np.asarray(x0))
    arrays = {"noise": np.concatenate(noise), "samples": np.concatenate(samples)}
    if cond is not None:
        arrays["cond"] = cond
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return PairedDomain(domain, arrays["noise"], arrays["samples"], cond)


def train_phase(name: str, cfg: DictConfig, domain: Domain, run_dir: Path, records: list[PhaseRecord], **kwargs: Any) -> TrainResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"config_{name}.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log.info("Phase %s: %d steps in %s", name, int(cfg.train.steps), run_dir)
    start = time.perf_counter()
    result = train(cfg, domain, run_dir, **kwargs)
    records.append(PhaseRecord(name, int(cfg.train.steps), float(result.steps_per_sec), time.perf_counter() - start))
    return result


def run_phases(cfg: DictConfig, domain: Domain, run_dir: Path) -> PhasesResult:
    """Train the teacher, then every student phase; returns the final student."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    spec = teacher_spec(cfg)
    student = student_options(cfg)
    plan = student_plan(student)
    teacher_steps, student_steps = split_steps(int(cfg.train.steps), spec.fraction, len(plan))
    records: list[PhaseRecord] = []

    teacher_cfg = phase_config(cfg, {"name": spec.objective, **spec.options}, teacher_steps)
    teacher = train_phase("teacher", teacher_cfg, domain, run_dir / "teacher", records)
    if teacher.preempted:
        return PhasesResult(teacher, records)

    train_domain: Any = domain
    if needs_pairs(student):
        start = time.perf_counter()
        train_domain = draw_pairs(domain, teacher, spec, int(cfg.seed), run_dir / "pairs.npz")
        records.append(PhaseRecord("pairs", 0, float("nan"), time.perf_counter() - start))

    previous = teacher
    result = teacher
    for k, (options, steps) in enumerate(zip(plan, student_steps)):
        last = k == len(plan) - 1
        phase_cfg = phase_config(cfg, options, steps)
        run = build_run(phase_cfg, train_domain)
        if spec.init_student:
            run = start_from(run, previous.state.ema_params)
        result = train_phase(
            "student" if len(plan) == 1 else f"student_{k}",
            phase_cfg,
            train_domain,
            run_dir if last else run_dir / f"phase_{k}",
            records,
            run=run,
            teacher_params=previous.state.ema_params,
            teacher_graphdef=previous.run.graphdef,
        )
        if result.preempted:
            break
        previous = result  # progressive distillation: the student becomes the next phase's teacher

    summary = {"phases": [dataclasses.asdict(r) for r in records], "total_steps": sum(r.steps for r in records)}
    (run_dir / "phases.json").write_text(json.dumps(summary, indent=2))
    return PhasesResult(result, records)
