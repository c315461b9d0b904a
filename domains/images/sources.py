"""Image data sources: TFDS array_record datasets (ImageNet-256, CelebA-HQ-256), image folders, and
the IDX files of MNIST and Fashion-MNIST.

A source gives random access to raw examples: ``read(indices)`` returns undecoded items
(encoded bytes, file paths, or the arrays of IDX files) and their labels in one I/O call,
``decode(item)`` turns one into a PIL image (RGB, or greyscale "L" for the IDX datasets).
:func:`image_batches` decodes, crops (or pads) and flips in a thread pool (PIL releases the
GIL) and yields host-local uint8 batches.

Reading TFDS datasets needs no TensorFlow: they are opened as ``array_record`` data
sources with image decoding skipped, and decoded here with PIL. Preparing them once with
``tfds build`` does need TensorFlow (the ImageNet and CelebA-HQ builders use ``tf.io``)
and the ``importlib_resources`` backport (TFDS locates its builder code with it).

Multi-host: each of ``jax.process_count()`` processes reads the indices
``process_index, process_index + process_count, ...`` of a split: disjoint, and together
every example.
"""

from __future__ import annotations

import gzip
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from domains.images.preprocess import decode_image, prepare_image, random_flip

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
# IDX files (MNIST, Fashion-MNIST)

# The IDX type byte -> numpy dtype; multi-byte values are big-endian.
IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class IDXSpec:
    """A dataset shipped as the four IDX files of MNIST's layout, and where to get them."""

    title: str
    classes: tuple[str, ...]
    how_to_get: str  # one sentence, part of a one-line error
    default_dir: str | None = None  # used when domain.data_dir is null and the folder exists

    @property
    def num_classes(self) -> int:
        return len(self.classes)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_DEB_DIR = "/usr/share/datasets/fashion-mnist"

IDX_DATASETS: dict[str, IDXSpec] = {
    "fashion_mnist": IDXSpec(
        title="Fashion-MNIST",
        classes=FASHION_MNIST_CLASSES,
        how_to_get=(
            f"install Debian's package with `apt-get install -y dataset-fashion-mnist` (as root; it puts them in "
            f"{FASHION_MNIST_DEB_DIR}), or without root `apt-get download dataset-fashion-mnist && dpkg-deb -x "
            f"dataset-fashion-mnist_*.deb <dir>` (they land in <dir>{FASHION_MNIST_DEB_DIR})"
        ),
        default_dir=FASHION_MNIST_DEB_DIR,
    ),
    "mnist": IDXSpec(
        title="MNIST",
        classes=tuple(str(i) for i in range(10)),
        how_to_get="download the four from http://yann.lecun.com/exdb/mnist/ (or a mirror of it)",
    ),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array in native byte order.

    Header: two zero bytes, a type byte (0x08 uint8, ..., 0x0E float64), the number of
    dimensions, then each dimension as a big-endian uint32; the values follow, big-endian.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        magic = data[:4].hex() if len(data) >= 4 else data.hex() or "empty"
        raise ValueError(f"{path} is not an IDX file: magic number 0x{magic} (expected 0x0000TTNN: type TT in "
                         f"{', '.join(f'{t:02x}' for t in IDX_DTYPES)}, NN dimensions).")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4)) if len(data) >= header else ()
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < header or len(data) != expected:
        raise ValueError(f"{path}: IDX header announces shape {shape} ({expected} bytes with the header), the file has {len(data)}.")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz): the inverse of :func:`read_idx`."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store {array.dtype}; use one of {sorted({str(d) for d in codes})}.")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = np.ascontiguousarray(array, IDX_DTYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + body)
    return path


def idx_data_dir(source: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder holding ``source``'s four IDX files; raises :class:`DataMissingError` (one line) if they are not there."""
    spec = IDX_DATASETS[source]
    if data_dir is None and spec.default_dir and Path(spec.default_dir).is_dir():
        data_dir = spec.default_dir
    names = [name for pair in IDX_FILES.values() for name in pair]
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    missing = names if folder is None else [n for n in names if _idx_path(folder, n) is None]
    if missing:
        where = "domain.data_dir is not set" if folder is None else f"{folder} lacks {', '.join(missing)}"
        raise DataMissingError(
            f"{spec.title} not found ({where}): expected a folder with {', '.join(n + '[.gz]' for n in names)}; to get them, "
            f"{spec.how_to_get}; domain.data_dir can point at any folder holding these files."
        )
    return folder


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class IDXSource:
    """One split of an IDX dataset, held in memory as uint8 (N, H, W); items are single images."""

    def __init__(self, folder: str | os.PathLike, split: str, classes: Sequence[str]):
        image_name, label_name = IDX_FILES[split]
        folder = Path(folder)
        self.images = read_idx(_idx_path(folder, image_name))
        self.labels = read_idx(_idx_path(folder, label_name)).astype(np.int32)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{folder / image_name}: expected uint8 images (N, H, W), got {self.images.dtype} {self.images.shape}.")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{folder / label_name}: {self.labels.shape[0]} labels for {len(self.images)} images.")
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < self.num_classes:
            raise ValueError(f"{folder / label_name}: labels outside 0..{self.num_classes - 1}.")

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return list(self.images[idx]), self.labels[idx]

    def decode(self, item: np.ndarray) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(item))  # 2-D uint8: greyscale ("L")


# --------------------------------------------------------------------------------------
# Opening by name

SOURCES = ("imagenet", "celebahq", "image_folder", *IDX_DATASETS)


def open_source(
    source: str,
    split: str,
    data_dir: str | os.PathLike,
    *,
    manual_dir: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSource:
    """Open ``split`` ("train" or "eval") of a named source; raises :class:`DataMissingError` with instructions.

    IDX datasets read ``train-*`` for "train" and ``t10k-*`` for "eval"; Fashion-MNIST falls back
    to the Debian package's folder when ``data_dir`` is None.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if source in IDX_DATASETS:
        return IDXSource(idx_data_dir(source, data_dir), split, IDX_DATASETS[source].classes)
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
    channels: int = 3,
    fit: str = "crop",
) -> Iterator[dict[str, np.ndarray]]:
    """Decoded uint8 NHWC batches ``{"images", "labels", "indices"}`` of ``channels`` channels,
    centre-cropped or padded to ``image_size`` (``fit``, see :func:`~domains.images.preprocess.prepare_image`).

    The flip mask of batch ``k`` comes from :func:`flip_rng` ``(seed, k)``: reproducible on
    resume and independent of thread scheduling.
    """
    pool = ThreadPoolExecutor(max(num_workers, 1))

    def load(numbered: tuple[int, np.ndarray]) -> dict[str, np.ndarray]:
        number, idx = numbered
        items, labels = source.read(idx)
        images = np.stack(list(pool.map(lambda item: prepare_image(source.decode(item), image_size, channels, fit), items)))
        if flip:
            images = random_flip(images, flip_rng(seed, number))
        return {"images": images, "labels": labels, "indices": np.asarray(idx)}

    try:
        # Batches are assembled one after another (each already parallel inside), while
        # the next ones load in the background.
        yield from prefetch_map(load, index_batches, num_workers=1, prefetch=prefetch)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
