"""Training lowers the loss and moves 1-step samples toward the data; resume is exact."""

import shutil

import jax
import numpy as np
import pytest

from shortcutlib.inference import make_sample_fn
from shortcutlib.metrics.distances import sliced_wasserstein
from shortcutlib.run import build_domain
from shortcutlib.train.logging import read_metrics
from shortcutlib.train.loop import build_run, train
from tests.utils import TINY_TOY, make_cfg


def one_step_distance(cfg, domain, run, params):
    sample_fn = make_sample_fn(run.graphdef, params, run.objective, domain.sample_shape)
    x = np.asarray(sample_fn(jax.random.PRNGKey(0), 1, 1024))
    data = domain.sampler(1024, np.random.default_rng(7))
    return sliced_wasserstein(x, data)


@pytest.mark.parametrize("prediction", ["velocity", "data"])
def test_short_training_lowers_loss_and_improves_one_step_samples(tmp_path, prediction):
    overrides = ["train.steps=300", "train.lr=3e-3", "train.ema_decay=0.9", "model.hidden=64", f"model.prediction={prediction}"]
    cfg = make_cfg(TINY_TOY + overrides)
    domain = build_domain(cfg)
    run = build_run(cfg, domain)
    before = one_step_distance(cfg, domain, run, run.state.params)
    result = train(cfg, domain, tmp_path, run=run)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:3])
    after = one_step_distance(cfg, domain, run, result.state.ema_params)
    # Untrained, 1-step samples are the noise itself (zero-initialised output, velocity) or
    # all zeros (data): ~0.55 or more here.
    assert after < 0.7 * before, (before, after)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_equals_uninterrupted(tmp_path):
    """N steps, stop, resume for N more == 2N uninterrupted (params, EMA, optimizer state, RNG, step)."""
    # A schedule that does not depend on train.steps, so the 10-step run is the first half of the 20-step one.
    base = TINY_TOY + ["train.ckpt_every=0", "train.ema_decay=0.9", "train.schedule=constant", "train.warmup_steps=3"]
    full_cfg = make_cfg(base + ["train.steps=20"])
    domain = build_domain(full_cfg)
    full = train(full_cfg, domain, tmp_path / "full")

    half_cfg = make_cfg(base + ["train.steps=10"])
    first = train(half_cfg, build_domain(half_cfg), tmp_path / "split")
    assert int(first.state.step) == 10
    resumed = train(full_cfg, build_domain(full_cfg), tmp_path / "split")
    assert int(resumed.state.step) == 20
    assert_trees_equal(full.state, resumed.state)


def test_resume_after_a_kill_leaves_one_history(tmp_path):
    """A run killed after its last checkpoint logged steps it trains again on resume: those rows
    are superseded, so metrics.jsonl is one curve, equal to the uninterrupted run's."""
    cfg = make_cfg(TINY_TOY + ["train.steps=10", "train.ckpt_every=4", "train.log_every=2", "train.keep_checkpoints=5"])
    train(cfg, build_domain(cfg), tmp_path / "run")
    uninterrupted = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    # As if killed right after logging step 10, with step 4 the newest checkpoint on disk.
    for step in (8, 10):
        shutil.rmtree(tmp_path / "run" / "checkpoints" / str(step))
    train(cfg, build_domain(cfg), tmp_path / "run")
    resumed = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    assert [r["step"] for r in resumed] == [2, 4, 6, 8, 10]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in uninterrupted], rel=1e-6)


def test_flow_warmup_trains_flow_matching_then_switches_and_resumes(tmp_path):
    """objective.flow_warmup=0.5 of 8 steps: steps 1-4 are exactly the shortcut without self-consistency rows (same
    losses), steps 5-8 are not; a run stopped before the switch resumes across it to the uninterrupted state."""
    base = TINY_TOY + ["objective=shortcut", "train.steps=8", "train.log_every=1", "train.ckpt_every=2", "train.keep_checkpoints=8"]
    cfg = make_cfg(base + ["objective.flow_warmup=0.5"])
    full = train(cfg, build_domain(cfg), tmp_path / "warmup")
    losses = [r["loss"] for r in read_metrics(tmp_path / "warmup" / "metrics.jsonl", "train")]
    alone_cfg = make_cfg(base + ["objective.bootstrap_fraction=0"])
    train(alone_cfg, build_domain(alone_cfg), tmp_path / "alone")
    alone = [r["loss"] for r in read_metrics(tmp_path / "alone" / "metrics.jsonl", "train")]
    assert losses[:4] == pytest.approx(alone[:4], rel=1e-6)
    assert all(a != pytest.approx(b, rel=1e-3) for a, b in zip(losses[4:], alone[4:]))

    shutil.copytree(tmp_path / "warmup" / "checkpoints", tmp_path / "split" / "checkpoints")
    for step in (4, 6, 8):  # as if stopped at step 2, before the switch
        shutil.rmtree(tmp_path / "split" / "checkpoints" / str(step))
    resumed = train(cfg, build_domain(cfg), tmp_path / "split")
    assert int(resumed.state.step) == 8
    assert_trees_equal(full.state, resumed.state)
