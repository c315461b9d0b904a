"""Data-parallel and FSDP training match one device; checkpoints move between meshes.

Fake CPU devices must be configured before JAX starts, so every case runs this file as a
script in a subprocess (``python test_sharding.py '<json>'``) with
``--xla_force_host_platform_device_count``; the pytest process only compares results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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
    "eval.enabled=false",
    "logging.progress=false",
    "train.schedule=constant",
    "train.warmup_steps=0",
    "train.lr=1e-2",
    "objective=flow_matching",
    "parallel.fsdp_min_size=256",
]


# ---------------------------------------------------------------- worker (runs in a subprocess)
def worker(spec: dict) -> None:
    """Run ``spec["jobs"]`` in order in this process: train (or restore the newest checkpoint of
    ``run_dir``) and write every array of the resulting state to ``out`` (.npz) with the
    partition spec of each leaf (.json)."""
    import jax

    if spec.get("coordinator"):
        from shortcutlib.parallel import ParallelConfig, initialize_distributed

        initialize_distributed(
            ParallelConfig(coordinator_address=spec["coordinator"], num_processes=spec["num_processes"], process_id=spec["process_id"])
        )
    from shortcutlib import parallel
    from shortcutlib.checkpoint import Checkpointer
    from shortcutlib.config import compose_config
    from shortcutlib.run import build_domain
    from shortcutlib.train.loop import build_run, state_shardings, train

    for job in spec["jobs"]:
        cfg = compose_config(TINY + job.get("overrides", []))
        domain = build_domain(cfg)
        if job["mode"] == "train":
            state = train(cfg, domain, Path(job["run_dir"])).state
        else:  # the placed initial state is the target: it carries this job's mesh
            run = build_run(cfg, domain)
            mesh = parallel.make_mesh(cfg.parallel)
            target = parallel.place(run.state, state_shardings(run.state, mesh, cfg.parallel.fsdp_min_size))
            state, _, _ = Checkpointer(Path(job["run_dir"]) / "checkpoints", async_save=False).restore(target)
        leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        info = {
            "devices": len(leaves[0][1].sharding.device_set),
            "specs": {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in leaves},
        }
        host = parallel.gather(state)
        if jax.process_index() == 0:
            arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(host)[0]}
            np.savez(job["out"], **arrays)
            Path(job["out"]).with_suffix(".json").write_text(json.dumps(info))


# ---------------------------------------------------------------- helpers for the tests
def worker_env(devices: int) -> dict[str, str]:
    """Fake CPU devices, the repository on the path, and a compilation cache shared by the
    subprocesses (most of their time is compiling the same small programs)."""
    return {
        **fake_cpu_devices_env(devices),
        "PYTHONPATH": str(ROOT),
        "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "shortcutlib-test-jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def launch(spec: dict, devices: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(spec)], cwd=ROOT, env=worker_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 420) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker timed out:\n{out[-4000:]}") from None
    assert proc.returncode == 0, out[-4000:]


def job(tmp: Path, name: str, overrides: list[str], mode: str = "train", run_dir: Path | None = None) -> dict:
    return {"mode": mode, "run_dir": str(run_dir or tmp / name), "out": str(tmp / f"{name}.npz"), "overrides": overrides}


def load(tmp: Path, name: str) -> tuple[dict, dict]:
    return dict(np.load(tmp / f"{name}.npz")), json.loads((tmp / f"{name}.json").read_text())


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


def test_sharded_training_and_checkpoints_across_meshes(tmp_path):
    """One 4-device process: 1-device, data-parallel, FSDP and mixed training agree; a state
    saved on a 2x2 mesh restores onto 1 device there and onto 8 devices in another process."""
    steps = ["train.steps=6"]
    saved_dir = tmp_path / "dp2fsdp2"
    finish(
        launch(
            {
                "jobs": [
                    job(tmp_path, "one", steps + ["parallel.devices=1"]),
                    job(tmp_path, "dp4", steps + ["parallel.data=-1", "parallel.fsdp=1"]),
                    job(tmp_path, "fsdp4", steps + ["parallel.data=1", "parallel.fsdp=-1"]),
                    job(tmp_path, "dp2fsdp2", steps + ["parallel.data=2", "parallel.fsdp=2"]),
                    job(tmp_path, "on1", steps + ["parallel.devices=1"], mode="restore", run_dir=saved_dir),
                ]
            },
            4,
        )
    )
    ref, ref_info = load(tmp_path, "one")
    assert int(ref[".step"]) == 6 and ref_info["devices"] == 1
    for name in ("dp4", "fsdp4", "dp2fsdp2"):
        got, info = load(tmp_path, name)
        assert info["devices"] == 4
        assert_trees_close(got, ref)
    # FSDP really shards the big kernels and their Adam moments; data parallelism does not.
    fsdp_specs = load(tmp_path, "fsdp4")[1]["specs"]
    sharded = [k for k, v in fsdp_specs.items() if "fsdp" in v]
    assert any(k.startswith(".params") for k in sharded) and any(k.startswith(".opt_state") for k in sharded)
    assert not any("fsdp" in v for v in load(tmp_path, "dp4")[1]["specs"].values())

    finish(launch({"jobs": [job(tmp_path, "on8", steps + ["parallel.data=1", "parallel.fsdp=8"], mode="restore", run_dir=saved_dir)]}, 8))
    saved, _ = load(tmp_path, "dp2fsdp2")
    for name, devices in (("on1", 1), ("on8", 8)):
        restored, info = load(tmp_path, name)
        assert info["devices"] == devices
        assert restored.keys() == saved.keys()
        for k in saved:
            np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
    assert any("fsdp" in v for v in load(tmp_path, "on8")[1]["specs"].values())


def test_bfloat16_compute_keeps_float32_state_and_loss():
    """model.dtype=bfloat16 is mixed precision: bf16 matmuls, f32 params/optimizer state/loss."""
    import jax
    import jax.numpy as jnp

    from shortcutlib import parallel
    from shortcutlib.config import compose_config
    from shortcutlib.run import build_domain
    from shortcutlib.train.loop import build_run, sharded_train_step, state_shardings

    cfg = compose_config(TINY + ["model.dtype=bfloat16", "parallel.devices=1"])
    domain = build_domain(cfg)
    run = build_run(cfg, domain)
    mesh = parallel.make_mesh(cfg.parallel)
    shardings = state_shardings(run.state, mesh, 256)
    step = sharded_train_step(run, cfg, mesh, shardings)
    batch = {"x": np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32), "cond": None}
    hlo = step.lower(run.state, batch, None).as_text()
    assert "bf16" in hlo
    state, metrics = step(parallel.place(run.state, shardings), parallel.global_batch(batch, mesh, 16), None)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    floats = [x for x in jax.tree.leaves((state.params, state.ema_params, state.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
