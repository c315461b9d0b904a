"""Orbax checkpoints: atomic, asynchronous saves of the whole train state; exact resume.

Each checkpoint holds the train state (params, EMA, optimizer state, step, RNG) and a JSON
item with what else a run needs to continue or evaluate: the domain's state (e.g. data
normalisers) and the resolved config.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves to ``<run_dir>/checkpoints/<step>``; orbax writes to a temporary folder and renames,
    so a checkpoint is either complete or absent.

    Sharded states save from every process at once (each writes its own shards; orbax
    coordinates), so with several processes every one of them must call ``save`` and
    ``restore`` alike. A restore lands on the shardings of its target, so a checkpoint
    written on one mesh resumes on another (4 devices to 1 or 8, replicated to FSDP).
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any], int]:
        """Restore onto the structure, dtypes and shardings of ``target`` (arrays, or
        ``jax.ShapeDtypeStruct`` leaves with shardings).

        Without ``step``, tries the newest checkpoint and falls back to older ones, with a
        warning, when one cannot be read (a partial or corrupted save); the unreadable ones
        are renamed ``<step>.unreadable-<time>`` so the resumed run can save those steps again.
        """
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        errors = []
        for s in steps:
            try:
                restored = self.manager.restore(
                    s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
                )
                if errors:
                    log.warning("Checkpoint(s) %s could not be read; resumed from step %d instead.", [e[0] for e in errors], s)
                    self._set_aside([e[0] for e in errors])
                return restored["state"], dict(restored["meta"]), s
            except Exception as exc:  # orbax raises various types for partial or corrupt data
                log.warning("Checkpoint at step %d is unreadable (%s: %s).", s, type(exc).__name__, exc)
                errors.append((s, exc))
        raise RuntimeError(f"No readable checkpoint in {self.directory}; tried steps {steps}.") from errors[-1][1]

    def _set_aside(self, steps: list[int]) -> None:
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in steps:
                path = self.directory / str(s)
                if path.exists():
                    path.rename(path.with_name(f"{s}.unreadable-{stamp}"))
                    log.warning("Moved the unreadable checkpoint %s to %s.", path, path.name + f".unreadable-{stamp}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoint_set_aside")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def read_meta(checkpoint_dir: str | Path, step: int | None = None) -> tuple[dict[str, Any], int]:
    """The JSON item of a checkpoint (config, domain state) without restoring arrays."""
    ckpt = Checkpointer(checkpoint_dir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {checkpoint_dir}.")
    meta = ckpt.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    ckpt.close()
    return dict(meta), step
