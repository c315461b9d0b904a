"""Non-finite losses (stop with a clear message, or skip the update) and unreadable checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from shortcutlib.checkpoint import Checkpointer
from shortcutlib.config import compose_config
from shortcutlib.run import build_domain
from shortcutlib.train.loop import NonFiniteLossError, build_run, train
from tests.parallel.test_sharding import TINY

BAD_BATCH = 7  # the 8th batch is NaN, so step 8 is the first non-finite one


def config(*overrides: str):
    return compose_config(TINY + list(overrides))


class PoisonedDomain:
    """The toy domain with one batch of NaN data."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_data(self, batch_size, seed, start_batch=0):
        for i, batch in enumerate(self.inner.train_data(batch_size, seed, start_batch), start=start_batch):
            if i == BAD_BATCH:
                batch = {**batch, "x": np.full_like(batch["x"], np.nan)}
            yield batch


def checkpoint_steps(directory: Path) -> list[int]:
    ckpt = Checkpointer(directory, async_save=False)
    steps = ckpt.all_steps()
    ckpt.close()
    return steps


def restore(directory: Path, target, step: int | None = None):
    ckpt = Checkpointer(directory, async_save=False)
    try:
        return ckpt.restore(target, step)
    finally:
        ckpt.close()


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_nonfinite_loss_stops_naming_step_and_checkpoint(tmp_path):
    cfg = config("train.steps=12", "train.ckpt_every=5", "train.log_every=10")
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, PoisonedDomain(build_domain(cfg)), tmp_path)
    message = str(err.value)
    assert "at step 8." in message
    assert f"Last good checkpoint: {tmp_path / 'checkpoints' / '5'}." in message
    assert "train.on_nonfinite=skip" in message
    # Nothing non-finite was saved.
    assert checkpoint_steps(tmp_path / "checkpoints") == [5]


def test_skip_mode_drops_the_bad_update_and_keeps_ema_finite(tmp_path):
    cfg = config("train.steps=10", "train.ckpt_every=7", "train.keep_checkpoints=5", "train.on_nonfinite=skip")
    domain = PoisonedDomain(build_domain(cfg))
    final = train(cfg, domain, tmp_path).state
    assert checkpoint_steps(tmp_path / "checkpoints") == [7, 10]
    before, _, _ = restore(tmp_path / "checkpoints", build_run(cfg, domain).state, 7)
    assert int(final.step) == 10
    for tree in (final.params, final.ema_params, final.opt_state):
        assert all(np.isfinite(x).all() for x in leaves(tree))
    # Step 8 was skipped: continuing from step 7 with one step gives back step 7's weights.
    cfg8 = config("train.steps=8", "train.on_nonfinite=skip")
    run8 = tmp_path / "to8"
    seed = Checkpointer(run8 / "checkpoints", async_save=False)
    seed.save(7, before, {"domain": {}, "config": {}}, force=True)
    seed.close()
    after = train(cfg8, domain, run8).state
    assert int(after.step) == 8
    for a, b in zip(leaves((after.params, after.ema_params, after.opt_state)), leaves((before.params, before.ema_params, before.opt_state))):
        np.testing.assert_array_equal(a, b)
    rows = (tmp_path / "metrics.jsonl").read_text()
    assert '"skipped_updates": 1' in rows


def corrupt(step_dir: Path) -> None:
    """Flip bytes in the middle of every array data file of a checkpoint."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no data files under {step_dir}"
    for p in files:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    cfg = config("train.steps=10", "train.ckpt_every=5")
    domain = build_domain(cfg)
    reference = leaves(train(cfg, domain, tmp_path).state)
    ckpt_dir = tmp_path / "checkpoints"
    corrupt(ckpt_dir / "10")
    with caplog.at_level(logging.WARNING):
        # Resuming reads step 10, fails, warns, resumes from step 5 and retrains to step 10.
        resumed = train(cfg, domain, tmp_path).state
    assert "Checkpoint at step 10 is unreadable" in caplog.text
    assert "resumed from step 5 instead" in caplog.text
    assert any(p.name.startswith("10.unreadable-") for p in ckpt_dir.iterdir())
    for a, b in zip(leaves(resumed), reference):
        np.testing.assert_array_equal(a, b)
    assert checkpoint_steps(ckpt_dir)[-1] == 10


def test_partial_checkpoint_falls_back(tmp_path, caplog):
    cfg = config("train.steps=4", "train.ckpt_every=2")
    domain = build_domain(cfg)
    run = build_run(cfg, domain)
    initial = leaves(run.state)
    train(cfg, domain, tmp_path, run=run)
    # The step donates its state, but never the caller's arrays.
    for a, b in zip(leaves(run.state), initial):
        np.testing.assert_array_equal(a, b)
    for p in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.unlink()  # a save cut short: metadata present, array data missing
    with caplog.at_level(logging.WARNING):
        state, _, step = restore(tmp_path / "checkpoints", build_run(cfg, domain).state)
    assert step == 2 and int(state.step) == 2
    assert "Checkpoint at step 4 is unreadable" in caplog.text
