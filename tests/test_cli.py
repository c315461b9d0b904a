"""The command line end to end on a tiny config, and its clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args: str) -> int:
    """The command line in this process: ``python -m shortcutlib.run <args>``."""
    from shortcutlib.run import main

    return main(list(args))


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
        "domain.eval_draws=1",
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


BAD_INPUT = [
    (["domain=nope"], "domain=nope: unknown domain. Accepted: celebahq, digits"),
    (["objective=nope"], "objective=nope: unknown objective. Accepted:"),
    (["train.nonexistent_key=1"], "train.nonexistent_key: unknown key. Accepted: batch_size, steps,"),
    (["objective.level_decayy=1"], "objective.level_decayy: unknown key. Accepted: bootstrap_fraction,"),
    (["train.batch_size=0"], "train.batch_size=0: must be at least 1."),
    (["train.steps=100", "train.warmup_steps=200"], "train.steps=100: must be above train.warmup_steps=200"),
    (["eval.steps=[0]"], "eval.steps=[0]: every step budget must be at least 1."),
    (["train.lr=abc"], "train.lr: Value 'abc' of type 'str' could not be converted to Float."),
    (["model.depth=four"], "model.depth: Value 'four' of type 'str' could not be converted to Integer."),
    (["mode=eval"], "mode=eval needs ckpt="),
    (["mode=eval", "ckpt=/does/not/exist"], "no checkpoint in /does/not/exist"),
    (["mode=fly"], "mode=fly: accepted: train, eval, sample."),
]


@pytest.mark.parametrize("args, expected", BAD_INPUT)
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys, args, expected):
    out = tmp_path / "x"
    assert run_main(*args, f"out_dir={out}") == 2
    err = capsys.readouterr().err
    assert err.startswith("shortcutlib: error: ") and expected in err, err
    assert err.count("\n") == 1
    assert not out.exists()


def test_robot_domain_without_the_robot_extra_names_the_install_command(tmp_path, capsys, monkeypatch):
    """As if gymnasium were not installed: the robot domain's import fails, before any work."""
    for name in list(sys.modules):
        if name == "gymnasium" or name.startswith(("gymnasium.", "domains.robot")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium -> ModuleNotFoundError
    out = tmp_path / "x"
    assert run_main("domain=robot", f"out_dir={out}") == 2
    err = capsys.readouterr().err
    assert "needs the package 'gymnasium': pip install -e \".[robot]\"" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_config_dump_shows_every_default(capsys):
    assert run_main("domain=toy2d", "--cfg", "job") == 0
    dump = capsys.readouterr().out
    for line in ("_target_: domains.toy.domain.Toy2DDomain", "level_decay: 0.5", "on_nonfinite: stop", "fsdp_min_size: 262144"):
        assert line in dump


def test_a_domain_sets_defaults_for_one_objective_only():
    """configs/domain_objective/<domain>_<objective>.yaml: the pseudo-Huber loss for the shortcut and
    flow matching on images, a smaller self-consistency share on the 2-D mixtures, heavier self-consistency
    rows on Fashion-MNIST; other objectives and domains keep their own, the command line wins."""
    from shortcutlib.config import compose_config

    def power(*overrides: str) -> float:
        return compose_config(list(overrides)).objective.adaptive_p

    assert power("domain=fmnist") == power("domain=fmnist", "objective=flow_matching") == 0.5
    assert power("experiment=fmnist_dit") == 0.5  # a domain chosen inside an experiment config
    assert power("domain=fmnist", "objective=meanflow") == 1.0  # MeanFlow's own
    assert power() == power("domain=digits", "objective=flow_matching") == 0.5  # the default job's
    assert power("domain=toy2d") == power("domain=robot", "objective=flow_matching") == 0.0
    assert power("experiment=fmnist_dit", "objective.adaptive_p=0") == 0.0
    share = compose_config(["domain=toy2d"]).objective.bootstrap_fraction  # the ring's own share
    assert share == 0.0625 and compose_config([]).objective.bootstrap_fraction == 0.125
    weight = compose_config(["experiment=fmnist_dit"]).objective.bootstrap_weight  # Fashion-MNIST's own weight
    assert weight == 4.0 and compose_config([]).objective.bootstrap_weight == 1.0
    assert compose_config(["experiment=fmnist_dit", "objective.bootstrap_weight=1"]).objective.bootstrap_weight == 1.0
