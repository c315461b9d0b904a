"""Image data sources: TFDS array_record datasets (ImageNet-256, CelebA-HQ-256) and image folders.

A source gives random access to raw examples: ``read(indices)`` returns undecoded items
(encoded bytes or file paths) and their labels in one I/O call, ``decode(item)`` turns one
into an RGB PIL image. :func:`image_batches` decodes, crops and flips in a thread pool
(PIL releases the GIL) and yields host-local uint8 batches.

Reading TFDS datasets needs no TensorFlow: they are opened as ``array_record`` data
sources with image decoding skipped, and decoded here with PIL. Preparing them once with
``tfds build`` does need TensorFlow (the ImageNet and CelebA-HQ builders use ``tf.io``)
and the ``importlib_resources`` backport (TFDS locates its builder code with it).

Multi-host: each of ``jax.process_count()`` processes reads the indices
``process_index, process_index + process_count, ...`` of a split: disjoint, and together
every example.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from domains.images.preprocess import center_crop_resize, decode_image, random_flip

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EVAL_SPLIT_DIRS = ("validation", "val", "test")


class DataMissingError(FileNotFoundError):
    """The dataset is not where the configuration says; the message says how to prepare it."""


@dataclass(frozen=True)
class TFDSSpec:
    """A TFDS dataset this package knows how to read, and how to prepare it."""

    tfds_name: str  # "name" or "name/config", as given to `tfds build`
    version: str
    num_classes: int
    train_split: str
    eval_split: str  # CelebA-HQ has only a train split; FID references use it too
    manual_files: str


TFDS_DATASETS: dict[str, TFDSSpec] = {
    "imagenet": TFDSSpec(
        tfds_name="imagenet2012",
        version="5.1.0",
        num_classes=1000,
        train_split="train",
        eval_split="validation",
        manual_files="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from https://image-net.org)",
    ),
    "celebahq": TFDSSpec(
        tfds_name="celeb_a_hq/256",
        version="2.0.0",
        num_classes=0,
        train_split="train",
        eval_split="train",
        manual_files=(
            "data256x256.tar (CelebA-HQ prepared as in "
            "https://github.com/tkarras/progressive_growing_of_gans#preparing-datasets-for-training)"
        ),
    ),
}


class ImageSource(Protocol):
    num_classes: int  # 0 for unlabelled data

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> tuple[list[Any], np.ndarray]:
        """Raw items (undecoded) and int32 labels (zeros when unlabelled) for ``indices``."""
        ...

    def decode(self, item: Any) -> Image.Image: ...


# --------------------------------------------------------------------------------------
# TFDS


def tfds_prepare_command(spec: TFDSSpec, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None) -> str:
    manual = manual_dir if manual_dir is not None else "<manual_dir>"
    return f"tfds build {spec.tfds_name} --data_dir={data_dir} --manual_dir={manual} --file_format=array_record"


def _missing_tfds_message(spec: TFDSSpec, data_dir: Path, manual_dir: Any, problem: str) -> str:
    base = spec.tfds_name.split("/")[0]
    expected = data_dir / spec.tfds_name / spec.version
    return (
        f"{problem}\n"
        f"Expected a TFDS dataset in array_record format at\n"
        f"  {expected}/  (dataset_info.json, features.json, "
        f"{base}-{spec.train_split}.array_record-00000-of-NNNNN, ...)\n"
        f"Prepare it once with {spec.manual_files} in the manual dir "
        f"(preparation needs TensorFlow: pip install tensorflow importlib_resources; reading does not):\n"
        f"  {tfds_prepare_command(spec, data_dir, manual_dir)}\n"
        f"or point data_dir at the folder that contains {spec.tfds_name}/."
    )


def resolve_tfds_dir(spec: TFDSSpec, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None) -> Path:
    """The prepared version directory of ``spec`` under ``data_dir``; the expected one if present, else the newest."""
    data_dir = Path(data_dir).expanduser()
    root = data_dir / spec.tfds_name
    candidates = [root / spec.version] + sorted((p for p in root.glob("*") if p.is_dir()), reverse=True)
    for version_dir in candidates:
        if not (version_dir / "dataset_info.json").is_file():
            continue
        if any(version_dir.glob("*.array_record-*")):
            return version_dir
        if any(version_dir.glob("*.tfrecord-*")):
            raise DataMissingError(
                _missing_tfds_message(
                    spec,
                    data_dir,
                    manual_dir,
                    f"{version_dir} holds tfrecord files, which need TensorFlow to read; rebuild with "
                    "--file_format=array_record (into another data_dir, or after deleting this one).",
                )
            )
    raise DataMissingError(_missing_tfds_message(spec, data_dir, manual_dir, f"No prepared {spec.tfds_name} under {data_dir}."))


class TFDSSource:
    """Random access to one split of a prepared TFDS dataset, images left encoded."""

    def __init__(self, dataset_dir: str | os.PathLike, split: str):
        import tensorflow_datasets as tfds  # optional extra: shortcutlib[images]

        builder = tfds.builder_from_directory(os.fspath(dataset_dir))
        features = builder.info.features
        if split not in builder.info.splits:
            raise ValueError(f"split {split!r} not in {dataset_dir} (has {sorted(builder.info.splits)}).")
        self.image_key = "image"
        self.label_key = "label" if "label" in features else None
        self.num_classes = int(features["label"].num_classes) if self.label_key else 0
        self._ds = builder.as_data_source(split=split, decoders={self.image_key: tfds.decode.SkipDecoding()})

    def __len__(self) -> int:
        return len(self._ds)

    def read(self, indices: Sequence[int]) -> tuple[list[bytes], np.ndarray]:
        records = self._ds.__getitems__([int(i) for i in indices])
        items = [r[self.image_key] for r in records]
        labels = np.array([r[self.label_key] if self.label_key else 0 for r in records], dtype=np.int32)
        return items, labels

    def decode(self, item: bytes) -> Image.Image:
        return decode_image(item)


# --------------------------------------------------------------------------------------
# Image folders


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def folder_split_dir(root: str | os.PathLike, split: str) -> Path:
    """``root/train`` and ``root/{validation,val,test}`` when they exist, else ``root`` for every split."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataMissingError(
            f"Image folder {root} does not exist. Expected <data_dir>/<class>/<image files> for labelled data, "
            "<data_dir>/<image files> for unlabelled data, optionally under <data_dir>/train and <data_dir>/val."
        )
    names = ("train",) if split == "train" else EVAL_SPLIT_DIRS
    for name in names:
        if (root / name).is_dir():
            return root / name
    return root


def folder_classes(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the immediate subfolders that contain images; empty for a flat folder."""
    folder = Path(folder)
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and _images_under(d))


class FolderSource:
    """A folder of images; each immediate subfolder is a class (label = index in sorted order).

    With class subfolders, images directly in the top folder are ignored. Pass ``classes``
    (from the training split) so that an evaluation split uses the same label numbering.
    """

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str] | None = None):
        folder = Path(folder)
        self.classes = list(classes) if classes is not None else folder_classes(folder)
        self.num_classes = len(self.classes)
        if self.classes:
            index = {name: i for i, name in enumerate(self.classes)}
            pairs = [(p, index[name]) for name in self.classes if (folder / name).is_dir() for p in _images_under(folder / name)]
        else:
            pairs = [(p, 0) for p in _images_under(folder)]
        if not pairs:
            raise DataMissingError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}.")
        self.paths = [p for p, _ in pairs]
        self.labels = np.array([label for _, label in pairs], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: Sequence[int]) -> tuple[list[Path], np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return [self.paths[i] for i in idx], self.labels[idx]

    def decode(self, item: Path) -> Image.Image:
        with Image.open(item) as image:
            return image.convert("RGB")


# --------------------------------------------------------------------------------------
# Opening by name

SOURCES = ("imagenet", "celebahq", "image_folder")


def open_source(
    source: str,
    split: str,
    data_dir: str | os.PathLike,
    *,
    manual_dir: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSource:
    """Open ``split`` ("train" or "eval") of a named source; raises :class:`DataMissingError` with instructions."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if data_dir is None:
        if source in TFDS_DATASETS:
            spec = TFDS_DATASETS[source]
            raise DataMissingError(_missing_tfds_message(spec, Path("<data_dir>"), manual_dir, "domain.data_dir is not set."))
        raise DataMissingError(f"data_dir is not set for source {source!r}; set domain.data_dir=<path>.")
    if source in TFDS_DATASETS:
        spec = TFDS_DATASETS[source]
        dataset_dir = resolve_tfds_dir(spec, data_dir, manual_dir)
        return TFDSSource(dataset_dir, spec.train_split if split == "train" else spec.eval_split)
    if source == "image_folder":
        if classes is None and split == "eval":
            classes = folder_classes(folder_split_dir(data_dir, "train"))
        return FolderSource(folder_split_dir(data_dir, split), classes=classes)
    raise ValueError(f"unknown image source {source!r}; choose one of {SOURCES}")


# --------------------------------------------------------------------------------------
# Sharding and batching


def process_shard(n: int, process_index: int | None = None, process_count: int | None = None) -> np.ndarray:
    """This process's indices of ``range(n)``: a stride, so shards are disjoint and cover everything."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    return np.arange(process_index, n, process_count, dtype=np.int64)


def epoch_batches(
    indices: np.ndarray, batch_size: int, seed: int, start_batch: int = 0, *, shuffle: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Endless ``(batch_number, indices)``: full batches over reshuffled epochs.

    Epoch ``e`` uses the permutation drawn from ``(seed, e)``, so resuming at
    ``start_batch`` reproduces the stream exactly without replaying it.
    """
    n = len(indices)
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} examples this process reads; lower batch_size.")
    number = start_batch
    while True:
        epoch, offset = divmod(number, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(indices) if shuffle else indices
        for b in range(offset, per_epoch):
            yield number, order[b * batch_size : (b + 1) * batch_size]
            number += 1


def ordered_batches(indices: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """One pass in order; the last batch may be short."""
    for number, start in enumerate(range(0, len(indices), batch_size)):
        yield number, indices[start : start + batch_size]


def prefetch_map(fn: Callable[[Any], Any], batches: Iterator[Any], num_workers: int, prefetch: int = 2) -> Iterator[Any]:
    """``fn`` applied to each element of ``batches`` in a thread pool, keeping ``prefetch`` results in flight, in order."""
    with ThreadPoolExecutor(max(num_workers, 1)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(fn, batch))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def flip_rng(seed: int, batch_number: int) -> np.random.Generator:
    """The generator of batch ``batch_number``'s random flips (shared with pre-encoded latents)."""
    return np.random.default_rng([seed, batch_number, 1])


def image_batches(
    source: ImageSource,
    index_batches: Iterator[tuple[int, np.ndarray]],
    *,
    image_size: int = 256,
    flip: bool = False,
    seed: int = 0,
    num_workers: int = 8,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Decoded, centre-cropped uint8 NHWC batches ``{"images", "labels", "indices"}``.

    The flip mask of batch ``k`` comes from :func:`flip_rng` ``(seed, k)``: reproducible on
    resume and independent of thread scheduling.
    """
    pool = ThreadPoolExecutor(max(num_workers, 1))

    def load(numbered: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
        number, idx = numbered
        items, labels = source.read(idx)
        images = np.stack(list(pool.map(lambda item: center_crop_resize(source.decode(item), image_size), items)))
        if flip:
            images = random_flip(images, flip_rng(seed, number))
        return {"images": images, "labels": labels, "indices": np.asarray(idx)}

    try:
        # Batches are assembled one after another (each already parallel inside), while
        # the next ones load in the background.
        yield from prefetch_map(load, index_batches, num_workers=1, prefetch=prefetch)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
