"""The command line end to end on a tiny config, and its clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "shortcutlib.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_then_eval_from_checkpoint(tmp_path):
    out = tmp_path / "run"
    tiny = [
        "domain=digits",
        "model.hidden=32",
        "model.depth=1",
        "model.num_heads=2",
        "train.steps=6",
        "train.batch_size=16",
        "train.log_every=2",
        "train.ckpt_every=3",
        "train.warmup_steps=0",
        "domain.eval_samples=64",
        "eval.steps=[1,2]",
        "eval.visualize_steps=[1]",
        f"domain.cache_dir={tmp_path / 'cache'}",
        "logging.progress=false",
    ]
    proc = run_cli(*tiny, f"out_dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "config.yaml").exists()
    assert (out / "loss.png").exists()
    assert (out / "samples" / "grid_1steps.png").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert {"fd@1", "fd@2", "fd_floor", "class_acc@1"} <= set(eval_rows[0])
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]

    proc = run_cli("mode=eval", f"ckpt={out}", "eval.steps=[1]", "eval.visualize_steps=[1]", "logging.progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [json.loads(line) for line in (out / "eval_step6" / "metrics.jsonl").read_text().splitlines()]
    assert evals[0]["step"] == 6 and "fd@1" in evals[0]
    # Same checkpoint, same noise: the re-evaluation reproduces the training run's number.
    assert evals[0]["fd@1"] == pytest.approx(eval_rows[0]["fd@1"], rel=1e-5)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["domain=nope"], "domain"),
        (["objective=nope"], "objective"),
        (["train.nonexistent_key=1"], "nonexistent_key"),
        (["mode=eval"], "ckpt="),
        (["mode=eval", "ckpt=/does/not/exist"], "No checkpoints found"),
        (["mode=fly"], "Unknown mode"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, args, expected):
    proc = run_cli(*args, f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
