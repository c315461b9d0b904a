"""Encode an image dataset once with the VAE, and read the latents back for training
(the command is ``python -m domains.images.encode_latents``).

Writes ``<out>/meta.json`` and shards ``shard-00000.latents.npy`` / ``shard-00000.labels.npy``.
Shard ``k`` holds examples ``k * shard_size ... (k + 1) * shard_size - 1`` of the split, in
dataset order. Each file is written under a temporary name and renamed when complete, so an
interrupted run leaves only whole shards and a rerun skips them (resumable). With several
processes (``jax.process_count() > 1``) process ``i`` encodes the shards ``k % count == i``.

What is stored: the posterior *mean* of the VAE, scaled as the codec scales it (model
space), as float16 by default (rounding error ~5e-4 relative, below the posterior's own
spread; ``--dtype float32`` doubles the disk: ImageNet is ~10 GB in float16). With
``--flip`` the latents of the mirrored image are stored too, as a second entry per
example, and :class:`LatentSource` picks one of the two at random: mirroring a latent grid
is not the same as encoding the mirrored image (the conv VAE is not exactly equivariant to
flips), so random flips stay exact at twice the disk.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domains.images.preprocess import flip_mask, to_model_range
from domains.images.sources import (
    DataMissingError,
    ImageSource,
    epoch_batches,
    flip_rng,
    image_batches,
    ordered_batches,
    process_shard,
)

log = logging.getLogger(__name__)

META_FILE = "meta.json"
FORMAT_VERSION = 1


def shard_paths(directory: Path, shard: int) -> tuple[Path, Path]:
    stem = directory / f"shard-{shard:05d}"
    return stem.with_suffix(".latents.npy"), stem.with_suffix(".labels.npy")


def shard_complete(directory: Path, shard: int) -> bool:
    return all(p.is_file() for p in shard_paths(directory, shard))


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / f".{META_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory / META_FILE)


def _check_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Refuse to mix shards written with different settings into one directory."""
    path = directory / META_FILE
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    keys = ("source", "split", "num_examples", "shard_size", "flip", "dtype", "image_size", "latent_shape")
    diff = {k: (old.get(k), meta.get(k)) for k in keys if old.get(k) != meta.get(k)}
    if diff:
        raise ValueError(f"{directory} already holds latents written with other settings {diff}; use another --out.")


def encode_dataset(
    source: ImageSource,
    codec: Any,
    out_dir: str | os.PathLike,
    *,
    source_name: str,
    split: str = "train",
    image_size: int = 256,
    batch_size: int = 64,
    shard_size: int = 8192,
    flip: bool = False,
    dtype: str = "float16",
    num_workers: int = 8,
    max_shards: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Encode every example of ``source`` into shards under ``out_dir``; returns ``out_dir``.

    ``codec.encode`` maps uint8-derived images in [-1, 1] (NHWC) to model-space latents.
    ``max_shards`` stops after writing that many new shards (to split the work over
    several sessions). Shards already complete are skipped.
    """
    from tqdm import tqdm

    if shard_size % batch_size:
        raise ValueError(f"shard_size {shard_size} must be a multiple of batch_size {batch_size}.")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    n = len(source)
    num_shards = -(-n // shard_size)
    probe = np.asarray(codec.encode(np.zeros((1, image_size, image_size, 3), np.float32)))
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source_name,
        "split": split,
        "num_examples": n,
        "num_classes": int(source.num_classes),
        "shard_size": shard_size,
        "num_shards": num_shards,
        "image_size": image_size,
        "latent_shape": list(probe.shape[1:]),
        "flip": bool(flip),
        "dtype": dtype,
        **(extra_meta or {}),
    }
    _check_meta(out, meta)
    mine = [int(s) for s in process_shard(num_shards, process_index, process_count)]
    if mine and mine[0] == 0:
        _write_meta(out, meta)
    todo = [s for s in mine if not shard_complete(out, s)]
    if max_shards is not None:
        todo = todo[:max_shards]
    if not todo:
        log.info("All %d shards of this process in %s are complete.", len(mine), out)
        return out

    def shard_range(s: int) -> np.ndarray:
        return np.arange(s * shard_size, min((s + 1) * shard_size, n), dtype=np.int64)

    def index_batches() -> Iterator[tuple[int, np.ndarray]]:
        for s in todo:
            for _, idx in ordered_batches(shard_range(s), batch_size):
                yield s, idx

    def encode(images: np.ndarray) -> np.ndarray:
        # Pad to a full batch so one compiled shape serves every call.
        pad = batch_size - len(images)
        x = to_model_range(np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)]) if pad else images)
        return np.asarray(codec.encode(x))[: len(images)]

    total = sum(len(shard_range(s)) for s in todo)
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    stream = image_batches(source, index_batches(), image_size=image_size, num_workers=num_workers)
    with tqdm(total=total, desc=f"encode {source_name}/{split}", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch, (s, _) in zip(stream, index_batches()):
            z = encode(batch["images"])
            if flip:
                z = np.stack([z, encode(batch["images"][:, :, ::-1])], axis=1)
            parts.setdefault(s, []).append((z.astype(dtype), batch["labels"]))
            bar.update(len(z))
            if sum(len(p[0]) for p in parts[s]) == len(shard_range(s)):
                latents_path, labels_path = shard_paths(out, s)
                _save_atomic(latents_path, np.concatenate([p[0] for p in parts[s]]))
                _save_atomic(labels_path, np.concatenate([p[1] for p in parts[s]]).astype(np.int32))
                del parts[s]
    return out


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory).expanduser() / META_FILE
    if not path.is_file():
        raise DataMissingError(
            f"No pre-encoded latents at {path.parent} ({META_FILE} missing). Create them with\n"
            "  python -m domains.images.encode_latents --source <imagenet|celebahq|image_folder> --data-dir <data_dir> "
            f"--vae <sd-vae-ft-mse folder> --out {path.parent}"
        )
    return json.loads(path.read_text())


class LatentSource:
    """Random access to pre-encoded latents (memory-mapped shards).

    ``batches`` yields ``{"x": float32 (B, *latent_shape), "cond": int32 (B,) or None}``
    over reshuffled epochs of this process's shard of the examples: the same examples and,
    when flips are stored, the same flips as the pixel pipeline with that seed.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        self.meta = read_meta(self.directory)
        missing = [s for s in range(self.meta["num_shards"]) if not shard_complete(self.directory, s)]
        if missing:
            raise DataMissingError(
                f"{len(missing)} of {self.meta['num_shards']} latent shards in {self.directory} are missing "
                f"(first: {missing[0]}); rerun the same `python -m domains.images.encode_latents ...` command to finish them."
            )
        shards = range(self.meta["num_shards"])
        self._latents = [np.load(shard_paths(self.directory, s)[0], mmap_mode="r") for s in shards]
        self.labels = np.concatenate([np.load(shard_paths(self.directory, s)[1]) for s in shards])
        self.shard_size = int(self.meta["shard_size"])
        self.flip = bool(self.meta["flip"])
        self.num_classes = int(self.meta["num_classes"])
        self.latent_shape = tuple(self.meta["latent_shape"])
        if len(self.labels) != self.meta["num_examples"]:
            raise ValueError(f"{self.directory}: shards hold {len(self.labels)} examples, meta.json says {self.meta['num_examples']}.")

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: Sequence[int], variant: np.ndarray | None = None) -> np.ndarray:
        """Latents for ``indices`` as float32; ``variant`` (0 original, 1 mirrored) when stored with flips."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.latent_shape), np.float32)
        shard, row = np.divmod(idx, self.shard_size)
        variant = np.zeros(len(idx), np.int64) if variant is None else np.asarray(variant)
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            order = np.argsort(row[sel])  # ascending rows read the memory map sequentially
            rows = row[sel][order]
            data = self._latents[s][rows]
            if self.flip:
                data = data[np.arange(len(rows)), variant[sel][order]]
            out[sel[order]] = data
        return out

    def batches(
        self,
        batch_size: int,
        seed: int,
        start_batch: int = 0,
        *,
        shuffle: bool = True,
        conditional: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        indices = process_shard(len(self), process_index, process_count)
        for number, idx in epoch_batches(indices, batch_size, seed, start_batch, shuffle=shuffle):
            variant = flip_mask(flip_rng(seed, number), len(idx)).astype(np.int64) if self.flip else None
            cond = self.labels[idx] if conditional and self.num_classes > 0 else None
            yield {"x": self.read(idx, variant), "cond": cond}
