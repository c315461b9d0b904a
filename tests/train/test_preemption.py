"""SIGTERM mid-run saves a checkpoint at the current step and exits cleanly; rerunning the
same command resumes and ends with exactly the parameters of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from shortcutlib.checkpoint import Checkpointer
from shortcutlib.config import compose_config
from shortcutlib.run import build_domain
from shortcutlib.train.loop import build_run, train
from tests.parallel.test_sharding import ROOT, TINY, worker_env

STEPS = 600
OVERRIDES = TINY + [f"train.steps={STEPS}", "train.log_every=10", "eval.visualize_steps=[1]", "domain.eval_samples=64"]


def command(out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "shortcutlib.run", *OVERRIDES, f"out_dir={out_dir}"]


def wait_for_first_log(proc: subprocess.Popen, metrics: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None, "training ended before it logged a step"
        assert time.monotonic() < deadline, "no step logged in time"
        time.sleep(0.05)


def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path):
    out = tmp_path / "run"
    env = worker_env(1)
    proc = subprocess.Popen(command(out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_first_log(proc, out / "metrics.jsonl")
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    assert "rerun with out_dir=" in log
    probe = Checkpointer(out / "checkpoints", async_save=False)
    stopped = probe.latest_step()
    probe.close()
    assert stopped is not None and 10 <= stopped < STEPS, stopped

    resumed = subprocess.run(command(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resumed from step {stopped}" in resumed.stdout + resumed.stderr

    # The same run without interruption, in this process.
    cfg = compose_config(OVERRIDES)
    domain = build_domain(cfg)
    reference = train(cfg, domain, tmp_path / "reference").state
    ckpt = Checkpointer(out / "checkpoints", async_save=False)
    assert ckpt.latest_step() == STEPS
    final, _, _ = ckpt.restore(build_run(cfg, domain).state)
    ckpt.close()
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(reference)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == STEPS
