"""Image sources: TFDS array_record datasets read without TensorFlow, image folders, sharding, preprocessing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domains.images import preprocess, sources

tfds = pytest.importorskip("tensorflow_datasets")

NUM_TRAIN, NUM_VAL, NUM_CLASSES = 10, 4, 3
# A top-level module name keeps TFDS from resolving the builder's code path as a package
# resource (which needs the importlib_resources backport this environment lacks).
BUILDER_MODULE = "fake_tfds_builders"


def _image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _labelled_examples(split: str, n: int):
    offset = 0 if split == "train" else 100
    for i in range(n):
        # PNG keeps pixels exact; PIL images are encoded without TensorFlow.
        yield i, {"image": Image.fromarray(_image(offset + i, 20 + i, 30)), "label": i % NUM_CLASSES}


def build_fake_imagenet(data_dir: Path) -> Path:
    """A tiny dataset laid out exactly as `tfds build imagenet2012 --file_format=array_record` lays it out."""
    with tfds.core.registered.skip_registration():

        class Imagenet2012(tfds.core.GeneratorBasedBuilder):
            __module__ = BUILDER_MODULE
            VERSION = tfds.core.Version("5.1.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Image(encoding_format="png"),
                            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                            "file_name": tfds.features.Text(),
                        }
                    ),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples("train", NUM_TRAIN), "validation": self._generate_examples("validation", NUM_VAL)}

            def _generate_examples(self, split, n):
                for key, ex in _labelled_examples(split, n):
                    yield key, {**ex, "file_name": f"{split}_{key}.png"}

    builder = Imagenet2012(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return data_dir / "imagenet2012" / "5.1.0"


def build_fake_celebahq(data_dir: Path) -> Path:
    """Unlabelled, with a builder config, as celeb_a_hq/256."""
    with tfds.core.registered.skip_registration():

        class CelebAHq(tfds.core.GeneratorBasedBuilder):
            __module__ = BUILDER_MODULE
            name = "celeb_a_hq"
            VERSION = tfds.core.Version("2.0.0")
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="256")]

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {"image": tfds.features.Image(shape=(24, 24, 3), encoding_format="png"), "image/filename": tfds.features.Text()}
                    ),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(6)}

            def _generate_examples(self, n):
                for i in range(n):
                    yield i, {"image": Image.fromarray(_image(200 + i, 24, 24)), "image/filename": f"{i}.png"}

    CelebAHq(config="256", data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir / "celeb_a_hq" / "256" / "2.0.0"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("tfds")
    build_fake_imagenet(data_dir)
    build_fake_celebahq(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes under train/ and val/, JPEG and PNG mixed, plus a file that is not an image."""
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 3), ("val", 2)):
        for c, name in enumerate(["cat", "dog"]):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(_image(1000 * c + 10 * i, 18, 22)).save(root / split / name / f"{i}.{ext}")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------------------ TFDS


def test_tfds_source_reads_without_tensorflow(tfds_dir):
    assert "tensorflow" not in sys.modules
    train = sources.open_source("imagenet", "train", tfds_dir)
    val = sources.open_source("imagenet", "eval", tfds_dir)
    assert (len(train), len(val), train.num_classes) == (NUM_TRAIN, NUM_VAL, NUM_CLASSES)
    # TFDS stores examples in a hashed order; each image's height (20 + i) tells which example it is.
    for split, src, offset in (("train", train, 0), ("validation", val, 100)):
        items, labels = src.read(range(len(src)))
        seen = set()
        for item, label in zip(items, labels):
            image = np.asarray(src.decode(item))
            i = image.shape[0] - 20
            seen.add(i)
            assert label == i % NUM_CLASSES
            np.testing.assert_array_equal(image, _image(offset + i, 20 + i, 30))
        assert seen == set(range(len(src)))
    assert "tensorflow" not in sys.modules


def test_celebahq_is_unlabelled_and_evaluates_on_train(tfds_dir):
    train = sources.open_source("celebahq", "train", tfds_dir)
    evals = sources.open_source("celebahq", "eval", tfds_dir)
    assert (len(train), len(evals), train.num_classes) == (6, 6, 0)
    items, labels = train.read([5, 2])
    np.testing.assert_array_equal(labels, [0, 0])
    expected = {_image(200 + i, 24, 24).tobytes() for i in range(6)}
    assert {np.asarray(train.decode(item)).tobytes() for item in train.read(range(6))[0]} == expected


def test_missing_tfds_data_names_layout_and_command(tmp_path):
    with pytest.raises(sources.DataMissingError) as info:
        sources.open_source("imagenet", "train", tmp_path / "nowhere", manual_dir="/data/ilsvrc")
    msg = str(info.value)
    assert f"{tmp_path / 'nowhere'}/imagenet2012/5.1.0" in msg
    assert "imagenet2012-train.array_record-00000-of-NNNNN" in msg
    assert f"tfds build imagenet2012 --data_dir={tmp_path / 'nowhere'} --manual_dir=/data/ilsvrc --file_format=array_record" in msg
    assert "ILSVRC2012_img_train.tar" in msg
    with pytest.raises(sources.DataMissingError, match="tfds build celeb_a_hq/256 .*--file_format=array_record"):
        sources.open_source("celebahq", "train", tmp_path)


def test_tfrecord_preparation_is_refused_with_the_fix(tmp_path):
    version_dir = tmp_path / "imagenet2012" / "5.1.0"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    (version_dir / "imagenet2012-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(sources.DataMissingError, match="tfrecord files.*--file_format=array_record"):
        sources.open_source("imagenet", "train", tmp_path)


def test_cli_exits_nonzero_with_instructions_when_data_missing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "domains.images.encode_latents", "--source", "imagenet", "--data-dir", str(tmp_path),
         "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "latents")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120,
    )
    assert proc.returncode == 2
    assert "tfds build imagenet2012" in proc.stderr and "array_record" in proc.stderr
    assert not (tmp_path / "latents").exists()


# ------------------------------------------------------------------------------ folders


def test_folder_labels_from_subfolders_and_splits(folder):
    train = sources.open_source("image_folder", "train", folder)
    val = sources.open_source("image_folder", "eval", folder)
    assert train.classes == ["cat", "dog"] and val.classes == ["cat", "dog"]
    assert (len(train), len(val)) == (6, 4)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    items, labels = train.read([4])
    assert items[0] == folder / "train" / "dog" / "1.png" and labels[0] == 1
    np.testing.assert_array_equal(np.asarray(train.decode(items[0])), _image(1010, 18, 22))


def test_flat_folder_is_unlabelled_and_serves_every_split(tmp_path):
    for i in range(3):
        Image.fromarray(_image(i, 8, 8)).save(tmp_path / f"{i}.png")
    for split in ("train", "eval"):
        src = sources.open_source("image_folder", split, tmp_path)
        assert (len(src), src.num_classes) == (3, 0)


def test_empty_or_missing_folder_is_explained(tmp_path):
    with pytest.raises(sources.DataMissingError, match="does not exist"):
        sources.open_source("image_folder", "train", tmp_path / "none")
    with pytest.raises(sources.DataMissingError, match="No images"):
        sources.open_source("image_folder", "train", tmp_path)


# ------------------------------------------------------------------------------ sharding and batching


@pytest.mark.parametrize("n,count", [(10, 1), (10, 3), (1281, 8), (5, 8)])
def test_process_shards_are_disjoint_and_complete(n, count):
    shards = [sources.process_shard(n, i, count) for i in range(count)]
    joined = np.concatenate(shards)
    assert len(joined) == n and set(joined.tolist()) == set(range(n))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_epoch_batches_reshuffle_and_resume_exactly():
    indices = np.arange(3, 13)
    stream = sources.epoch_batches(indices, 3, seed=7)
    first = [next(stream) for _ in range(7)]
    assert [n for n, _ in first] == list(range(7))
    epoch0 = np.concatenate([b for _, b in first[:3]])
    assert len(set(epoch0.tolist())) == 9 and set(epoch0.tolist()) <= set(indices.tolist())
    assert not np.array_equal(first[0][1], first[3][1])  # epoch 1 is reshuffled
    resumed = sources.epoch_batches(indices, 3, seed=7, start_batch=4)
    for (n, b), (m, c) in zip(first[4:], [next(resumed) for _ in range(3)]):
        assert n == m
        np.testing.assert_array_equal(b, c)
    with pytest.raises(ValueError, match="exceeds"):
        next(sources.epoch_batches(indices, 11, seed=0))


def test_image_batches_decode_crop_and_flip_deterministically(tfds_dir):
    src = sources.open_source("imagenet", "train", tfds_dir)
    batches = list(sources.image_batches(src, sources.ordered_batches(np.arange(NUM_TRAIN), 4), image_size=16, num_workers=2))
    assert [b["images"].shape for b in batches] == [(4, 16, 16, 3), (4, 16, 16, 3), (2, 16, 16, 3)]
    assert batches[0]["images"].dtype == np.uint8
    items, labels = src.read(range(NUM_TRAIN))
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in batches]), labels)
    np.testing.assert_array_equal(batches[1]["images"][1], preprocess.center_crop_resize(src.decode(items[5]), 16))

    def flipped(seed):
        return list(sources.image_batches(src, sources.ordered_batches(np.arange(8), 8), image_size=16, flip=True, seed=seed))[0]["images"]

    a, b = flipped(3), flipped(3)
    np.testing.assert_array_equal(a, b)
    plain = np.concatenate([x["images"] for x in batches])[:8]
    same = [np.array_equal(a[i], plain[i]) for i in range(8)]
    mirrored = [np.array_equal(a[i], plain[i][:, ::-1]) for i in range(8)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)


# ------------------------------------------------------------------------------ preprocessing


def test_center_crop_resize_matches_adm_recipe():
    image = _image(0, 600, 1000)
    out = preprocess.center_crop_resize(image, 256)
    # ADM by hand: the short side 600 >= 2 * 256, so box-halve once to 500x300; then bicubic to 427x256; crop the centre.
    pil = Image.fromarray(image).resize((500, 300), resample=Image.Resampling.BOX)
    pil = pil.resize((round(500 * 256 / 300), 256), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(pil)
    left = (arr.shape[1] - 256) // 2
    np.testing.assert_array_equal(out, arr[:, left : left + 256])
    assert preprocess.center_crop_resize(_image(1, 40, 30), 16).shape == (16, 16, 3)
    grey = Image.fromarray(_image(2, 20, 20)[..., 0])
    assert preprocess.center_crop_resize(grey, 8).shape == (8, 8, 3)


def test_value_ranges_and_flip():
    images = np.stack([_image(i, 4, 5) for i in range(6)])
    x = preprocess.to_model_range(images)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(preprocess.to_uint8(x), images)
    np.testing.assert_array_equal(preprocess.to_uint8(np.array([[[[-3.0, 0.0, 3.0]]]])), [[[[0, 128, 255]]]])
    flipped = preprocess.random_flip(images, np.random.default_rng(0), prob=1.0)
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    np.testing.assert_array_equal(preprocess.random_flip(images, np.random.default_rng(0), prob=0.0), images)
