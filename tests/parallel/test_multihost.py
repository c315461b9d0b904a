"""Two processes on localhost form one 4-device mesh and train like a single process.

Each process (2 fake CPU devices, gloo collectives) calls ``jax.distributed.initialize``
with a coordinator on 127.0.0.1, keeps only its own rows of every global batch, and
``jax.make_array_from_process_local_data`` assembles the global batch. Both write the same
checkpoint directory; process 0 writes the metrics.
"""

from __future__ import annotations

import json
import socket

import numpy as np

from tests.parallel.test_sharding import assert_trees_close, finish, job, launch, load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    steps = ["train.steps=6"]
    coordinator = f"127.0.0.1:{free_port()}"
    multi = job(tmp_path, "multi", steps + ["parallel.data=2", "parallel.fsdp=2", "train.ckpt_every=3"])
    procs = [
        launch({"coordinator": coordinator, "num_processes": 2, "process_id": i, "jobs": [multi]}, 2) for i in range(2)
    ]
    procs.append(launch({"jobs": [job(tmp_path, "one", steps)]}, 1))
    for proc in procs:
        finish(proc)

    ref, _ = load(tmp_path, "one")
    got, info = load(tmp_path, "multi")
    assert info["devices"] == 4
    assert int(got[".step"]) == 6
    assert_trees_close(got, ref)
    # The sharded state was saved by both processes together and reads back whole.
    run_dir = tmp_path / "multi"
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 6]  # written once, by process 0
    assert all(np.isfinite(r["loss"]) for r in rows)
