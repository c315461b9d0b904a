"""Data-parallel and FSDP training match one device; checkpoints move between meshes.

Fake CPU devices must be configured before JAX starts, so every case runs this file as a
script in a subprocess (``python test_sharding.py '<json>'``) with
``--xla_force_host_platform_device_count``; the pytest process only compares results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from shortcutlib.parallel import fake_cpu_devices_env, fsdp_spec, mesh_shape

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "domain=toy2d",
    "model.hidden=32",
    "model.depth=2",
    "train.batch_size=16",
    "train.log_every=4",
    "train.ckpt_every=0",
    "train.warmup_steps=0",
    "eval.enabled=false",
    "logging.progress=false",
    "parallel.fsdp_min_size=256",
]


# ---------------------------------------------------------------- worker (runs in a subprocess)
def worker(spec: dict) -> None:
    import jax

    if spec.get("coordinator"):
        from shortcutlib.parallel import ParallelConfig, initialize_distributed

        initialize_distributed(
            ParallelConfig(coordinator_address=spec["coordinator"], num_processes=spec["num_processes"], process_id=spec["process_id"])
        )
    from hydra import compose, initialize_config_module

    from domains import build_domain
    from shortcutlib import parallel
    from shortcutlib.checkpoint import Checkpointer
    from shortcutlib.train.loop import build_run, state_shardings, train

    with initialize_config_module("configs", version_base=None):
        cfg = compose("config", overrides=TINY + spec.get("overrides", []))
    domain = build_domain(cfg.domain)
    if spec["mode"] == "train":
        state = train(cfg, domain, Path(spec["run_dir"])).state
    else:  # restore the newest checkpoint of run_dir onto this process's mesh
        run = build_run(cfg, domain)
        pcfg = parallel.ParallelConfig.from_cfg(cfg)
        mesh = parallel.make_mesh(pcfg)
        target = parallel.place(run.state, state_shardings(run.state, mesh, pcfg.fsdp_min_size))
        state, _, _ = Checkpointer(Path(spec["run_dir"]) / "checkpoints", async_save=False).restore(target)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    specs = {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in leaves}
    host = parallel.gather(state)
    if jax.process_index() == 0:
        arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(host)[0]}
        np.savez(spec["out"], **arrays)
        Path(spec["out"]).with_suffix(".json").write_text(json.dumps({"devices": jax.device_count(), "specs": specs}))


# ---------------------------------------------------------------- helpers for the tests
def launch(spec: dict, devices: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(spec)],
        cwd=ROOT,
        env={**fake_cpu_devices_env(devices), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]


def run_worker(tmp: Path, name: str, devices: int, overrides: list[str], mode: str = "train", run_dir: Path | None = None) -> tuple[dict, dict]:
    out = tmp / f"{name}.npz"
    spec = {"mode": mode, "run_dir": str(run_dir or tmp / name), "out": str(out), "overrides": overrides}
    finish(launch(spec, devices))
    return dict(np.load(out)), json.loads(out.with_suffix(".json").read_text())


def assert_trees_close(a: dict, b: dict, *, rtol: float = 2e-4, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------- tests
def test_fsdp_spec_picks_largest_divisible_axis():
    assert fsdp_spec((32, 128), 4, 256) == P(None, "fsdp")
    assert fsdp_spec((128, 32), 4, 256) == P("fsdp", None)
    assert fsdp_spec((6, 12), 4, 1) == P(None, "fsdp")  # 6 is not divisible by 4
    assert fsdp_spec((6, 10), 4, 1) == P()  # nothing divisible: replicate
    assert fsdp_spec((64,), 4, 256) == P()  # too small: replicate
    assert fsdp_spec((64, 64), 1, 1) == P()  # no fsdp axis
    assert fsdp_spec((16, 16), 2, 1) == P("fsdp", None)  # ties: the first axis


def test_mesh_shape_resolves_minus_one():
    assert mesh_shape(-1, 1, 8) == (8, 1)
    assert mesh_shape(-1, 2, 8) == (4, 2)
    assert mesh_shape(2, -1, 8) == (2, 4)
    with pytest.raises(ValueError, match="must equal"):
        mesh_shape(3, 1, 8)


def test_data_parallel_and_fsdp_match_one_device(tmp_path):
    steps = ["train.steps=6"]
    # Start all four in parallel: each is mostly JAX start-up and compilation.
    cases = {
        "one": (1, []),
        "dp4": (4, ["parallel.data=-1", "parallel.fsdp=1"]),
        "fsdp4": (4, ["parallel.data=1", "parallel.fsdp=4"]),
        "dp2fsdp2": (4, ["parallel.data=2", "parallel.fsdp=2"]),
    }
    procs = {}
    for name, (devices, extra) in cases.items():
        spec = {"mode": "train", "run_dir": str(tmp_path / name), "out": str(tmp_path / f"{name}.npz"), "overrides": steps + extra}
        procs[name] = launch(spec, devices)
    for proc in procs.values():
        finish(proc)
    ref = dict(np.load(tmp_path / "one.npz"))
    assert int(ref[".step"]) == 6
    for name in ("dp4", "fsdp4", "dp2fsdp2"):
        got = dict(np.load(tmp_path / f"{name}.npz"))
        assert_trees_close(got, ref)
    # FSDP really shards the big kernels (and their Adam moments), data parallelism does not.
    fsdp_specs = json.loads((tmp_path / "fsdp4.json").read_text())["specs"]
    dp_specs = json.loads((tmp_path / "dp4.json").read_text())["specs"]
    sharded = [k for k, v in fsdp_specs.items() if "fsdp" in v]
    assert any(k.startswith(".params") for k in sharded) and any(k.startswith(".opt_state") for k in sharded)
    assert not any("fsdp" in v for v in dp_specs.values())


def test_checkpoint_moves_between_meshes(tmp_path):
    run_dir = tmp_path / "run"
    saved, meta = run_worker(tmp_path, "saved", 4, ["train.steps=3", "parallel.data=2", "parallel.fsdp=2"], run_dir=run_dir)
    assert any("fsdp" in v for v in meta["specs"].values())
    # Restore onto 1 device (replicated) and onto 8 devices with a different FSDP width.
    procs = [
        launch({"mode": "restore", "run_dir": str(run_dir), "out": str(tmp_path / "on1.npz"), "overrides": ["train.steps=3"]}, 1),
        launch(
            {"mode": "restore", "run_dir": str(run_dir), "out": str(tmp_path / "on8.npz"), "overrides": ["train.steps=3", "parallel.data=1", "parallel.fsdp=8"]},
            8,
        ),
    ]
    for proc in procs:
        finish(proc)
    for name, devices in (("on1", 1), ("on8", 8)):
        restored = dict(np.load(tmp_path / f"{name}.npz"))
        info = json.loads((tmp_path / f"{name}.json").read_text())
        assert info["devices"] == devices
        assert restored.keys() == saved.keys()
        for k in saved:
            np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
    on8 = json.loads((tmp_path / "on8.json").read_text())["specs"]
    assert any("fsdp" in v for v in on8.values())


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
