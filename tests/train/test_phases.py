"""Two-phase methods from one command: step split, plans, and tiny end-to-end runs on toy data."""

import json

import jax
import numpy as np
import pytest

from shortcutlib.config import compose_config
from shortcutlib.objectives import reflow
from shortcutlib.objectives.base import split_steps
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.run import build_domain
from shortcutlib.train import phases
from shortcutlib.train.loop import build_run

TINY = ["domain=toy2d", "model.hidden=16", "model.depth=1", "train.batch_size=16", "train.warmup_steps=0",
        "train.log_every=2", "train.ckpt_every=0", "logging.progress=false", "domain.eval_samples=64"]


def config(*overrides):
    return compose_config([*TINY, *overrides])


def test_split_steps_adds_up():
    assert split_steps(100, 0.5, 1) == (50, [50])
    teacher, students = split_steps(101, 0.3, 7)
    assert teacher == 30 and sum(students) == 71 and max(students) - min(students) <= 1
    with pytest.raises(ValueError, match="too few"):
        split_steps(6, 0.5, 7)


def test_objectives_plan_their_phases_and_phase_configs_cap_ema_and_warmup():
    cfg = config("objective=progressive", "objective.start_steps=8", "train.steps=40", "train.ema_decay=0.999", "train.warmup_steps=10")
    domain = build_domain(cfg)
    plan = phases.plan_phases(cfg, domain)
    assert [p.name for p in plan] == ["teacher", "student_0", "student_1", "student_2"]
    assert [p.directory for p in plan] == ["teacher", "phase_0", "phase_1", ""]
    assert [p.objective.phase for p in plan[1:]] == [0, 1, 2]
    assert isinstance(plan[0].objective, FlowMatching) and not plan[0].uses_teacher
    assert all(p.uses_teacher and p.init_from_teacher for p in plan[1:])
    assert sum(p.steps for p in plan) == 40
    pc = phases.phase_config(cfg, plan[2])
    assert pc.train.steps == plan[2].steps == 7
    assert pc.train.ema_decay == pytest.approx(1 - 5 / 7) and pc.train.warmup_steps == 1
    # Each phase's objective knows its own length (consistency's doubling schedule needs it).
    cd = config("objective=consistency_distillation", "train.steps=40")
    assert [p.objective.context.total_steps for p in phases.plan_phases(cd, build_domain(cd))] == [20, 20]
    assert len(phases.plan_phases(config("objective=consistency"), domain)) == 1


def test_start_from_replaces_weights_and_resets_optimizer():
    cfg = config("objective=flow_matching", "train.steps=4")
    run = build_run(cfg, build_domain(cfg))
    other = jax.tree.map(lambda p: p + 1.0, run.state.params)
    started = phases.start_from(run, other)
    for a, b, c in zip(jax.tree.leaves(started.state.params), jax.tree.leaves(started.state.ema_params), jax.tree.leaves(other)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    np.testing.assert_array_equal(
        jax.tree.leaves(started.state.opt_state)[0], jax.tree.leaves(run.tx.init(other))[0]
    )


@pytest.mark.slow
def test_progressive_runs_teacher_and_all_phases(tmp_path):
    cfg = config("objective=progressive", "objective.start_steps=4", "train.steps=12")
    domain = build_domain(cfg)
    out = phases.run_phases(cfg, domain, tmp_path)
    assert [p.name for p in out.phases] == ["teacher", "student_0", "student_1"]
    assert out.total_steps == 12 and [p.steps for p in out.phases] == [6, 3, 3]
    assert (tmp_path / "teacher" / "checkpoints").is_dir() and (tmp_path / "phase_0" / "checkpoints").is_dir()
    assert (tmp_path / "checkpoints").is_dir()  # the final student is the run itself
    summary = json.loads((tmp_path / "phases.json").read_text())
    assert summary["total_steps"] == 12
    assert int(out.result.state.step) == 3
    assert out.result.run.objective.phase == 1


@pytest.mark.slow
def test_two_stage_reflow_draws_pairs_once_and_resumes(tmp_path):
    cfg = config("objective=reflow_two_stage", "train.steps=8", "objective.pairs=64", "objective.pair_steps=2", "objective.pair_batch=32")
    domain = build_domain(cfg)
    out = phases.run_phases(cfg, domain, tmp_path)
    assert [p.name for p in out.phases] == ["teacher", "student_data", "student"]
    pairs = np.load(tmp_path / "pairs.npz")
    assert pairs["noise"].shape == (64, 2) and pairs["samples"].shape == (64, 2)
    assert not np.allclose(pairs["noise"], pairs["samples"])
    paired = reflow.PairedDomain(domain, pairs["noise"], pairs["samples"], None)
    b = next(paired.train_data(8, 0))
    assert set(b["cond"]) == {reflow.PAIR_NOISE, reflow.PAIR_COND}
    # Each stored sample sits next to its own noise.
    idx = [int(np.where((pairs["samples"] == row).all(1))[0][0]) for row in b["x"]]
    np.testing.assert_array_equal(b["cond"][reflow.PAIR_NOISE], pairs["noise"][idx])
    # Rerunning the same command resumes every phase at its end: no further steps.
    again = phases.run_phases(cfg, domain, tmp_path)
    assert int(again.result.state.step) == int(out.result.state.step) == 4
    for a, c in zip(jax.tree.leaves(again.result.state.params), jax.tree.leaves(out.result.state.params)):
        np.testing.assert_array_equal(a, c)
