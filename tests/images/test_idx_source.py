"""MNIST-layout IDX files: the parser, the source (splits, sharding, missing data), the pixel-space
image domain over them, its classifier evaluation, and a tiny run through the command line.

Small IDX files are written to a temporary folder (no Debian package needed): the training files
gzipped, the t10k files not, as both occur.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from domains.images import sources
from domains.images.sources import DataMissingError, open_source, process_shard, read_idx, write_idx
from shortcutlib.config import ConfigError, compose_config, instantiate
from shortcutlib.domain import IdentityCodec

NUM_TRAIN, NUM_EVAL = 60, 30
TINY_JUDGE = ["domain.judge.conv_channels=[4,8]", "domain.judge.features=16", "domain.judge.epochs=2", "domain.judge.batch_size=16"]


def clothes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 pictures on a black background: class c is a bright block whose row depends on c."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, c in enumerate(labels):
        top = 2 + 2 * int(c)
        images[i, top : top + 4, 4:24] = rng.integers(150, 256, (4, 20))
    return images, labels


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed, suffix in (("train", NUM_TRAIN, 0, ".gz"), ("t10k", NUM_EVAL, 1, "")):
        images, labels = clothes(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("fashion"))


def fmnist(idx_dir: Path, *extra: str):
    return compose_config(["domain=fmnist", f"domain.data_dir={idx_dir}", *extra])


# ------------------------------------------------------------------------------ parser


def test_idx_header_is_parsed_as_documented(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    # By hand: zero, zero, type 0x08 (unsigned byte), 3 dimensions, each a big-endian uint32.
    raw = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4) + images.tobytes()
    (tmp_path / "plain").write_bytes(raw)
    with gzip.open(tmp_path / "packed.gz", "wb") as f:
        f.write(raw)
    for name in ("plain", "packed.gz"):
        parsed = read_idx(tmp_path / name)
        assert parsed.dtype == np.uint8
        np.testing.assert_array_equal(parsed, images)
    assert (tmp_path / "plain").read_bytes() == write_idx(tmp_path / "again", images).read_bytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.random.default_rng(0).normal(0, 50, (5, 7)) if np.dtype(dtype).kind == "f" else np.arange(35) % 100).astype(dtype)
    array = array.reshape(5, 7)
    back = read_idx(write_idx(tmp_path / f"a{suffix}", array))
    assert back.dtype == np.dtype(dtype) and back.shape == (5, 7)
    np.testing.assert_array_equal(back, array)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / f"labels{suffix}", labels)), labels)


def test_wrong_magic_number_or_size_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x01\x08\x03" + struct.pack(">III", 1, 2, 2) + bytes(4))
    with pytest.raises(ValueError, match=r"is not an IDX file: magic number 0x00010803"):
        read_idx(bad)
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x02" + struct.pack(">II", 3, 3) + bytes(5))
    with pytest.raises(ValueError, match=r"announces shape \(3, 3\)"):
        read_idx(short)


# ------------------------------------------------------------------------------ source


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_source_splits_labels_and_decoding(idx_dir, name):
    train, evals = open_source(name, "train", idx_dir), open_source(name, "eval", idx_dir)
    assert (len(train), len(evals), train.num_classes) == (NUM_TRAIN, NUM_EVAL, 10)
    images, labels = clothes(NUM_EVAL, 1)
    items, got = evals.read([4, 0, 17])
    np.testing.assert_array_equal(got, labels[[4, 0, 17]])
    assert got.dtype == np.int32
    picture = evals.decode(items[0])
    assert isinstance(picture, Image.Image) and picture.mode == "L"
    np.testing.assert_array_equal(np.asarray(picture), images[4])
    assert train.classes[0] == ("T-shirt/top" if name == "fashion_mnist" else "0")


def test_shards_of_two_processes_are_disjoint_and_cover_the_split(idx_dir):
    source = open_source("fashion_mnist", "train", idx_dir)
    shards = [process_shard(len(source), i, 2) for i in range(2)]
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(NUM_TRAIN))
    images, labels = clothes(NUM_TRAIN, 0)
    for shard in shards:
        items, got = source.read(shard)
        np.testing.assert_array_equal(np.stack(items), images[shard])
        np.testing.assert_array_equal(got, labels[shard])


def test_domain_batches_of_each_process_stay_in_its_shard(idx_dir, monkeypatch):
    domain = instantiate(fmnist(idx_dir).domain)
    images = clothes(NUM_TRAIN, 0)[0]
    seen = []
    for index in range(2):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        stream = domain.train_data(10, seed=0)
        epoch = np.concatenate([next(stream)["x"] for _ in range(NUM_TRAIN // 2 // 10)])
        found = {int(np.flatnonzero((images == np.round((x[2:30, 2:30, 0] + 1) * 127.5)).all(axis=(1, 2)))[0]) for x in epoch}
        assert all(i % 2 == index for i in found) and len(found) == NUM_TRAIN // 2
        seen.append(found)
    assert seen[0] | seen[1] == set(range(NUM_TRAIN))


def test_missing_data_is_one_line_naming_files_and_package(tmp_path, monkeypatch):
    with pytest.raises(DataMissingError) as info:
        open_source("fashion_mnist", "train", tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    for expected in ("apt-get install -y dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist", "dpkg-deb -x",
                     "train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]", str(tmp_path / "nowhere"), "domain.data_dir"):
        assert expected in message
    # A folder with only some of the files names the missing ones.
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / "train-images-idx3-ubyte.gz", clothes(3, 0)[0])
    with pytest.raises(DataMissingError, match=r"lacks train-labels-idx1-ubyte, t10k-images"):
        open_source("fashion_mnist", "eval", partial)
    # Without data_dir, the Debian folder is the default; where it is absent, that is said.
    monkeypatch.setitem(sources.IDX_DATASETS, "fashion_mnist",
                        sources.IDXSpec("Fashion-MNIST", sources.FASHION_MNIST_CLASSES, "apt-get install -y dataset-fashion-mnist",
                                        str(tmp_path / "no_package")))
    with pytest.raises(DataMissingError, match="domain.data_dir is not set"):
        open_source("fashion_mnist", "train", None)
    with pytest.raises(DataMissingError, match="MNIST not found.*yann.lecun.com"):
        open_source("mnist", "train", None)


def test_debian_folder_is_the_default(idx_dir, monkeypatch):
    monkeypatch.setitem(sources.IDX_DATASETS, "fashion_mnist",
                        sources.IDXSpec("Fashion-MNIST", sources.FASHION_MNIST_CLASSES, "", str(idx_dir)))
    assert len(open_source("fashion_mnist", "eval", None)) == NUM_EVAL


def test_command_line_reports_missing_data_in_one_line(tmp_path, capsys):
    from shortcutlib.run import main

    assert main(["domain=fmnist", f"domain.data_dir={tmp_path / 'none'}", f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install -y dataset-fashion-mnist" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ pixel-space domain


def test_pixel_domain_pads_to_32_with_the_background(idx_dir):
    cfg = fmnist(idx_dir)
    domain = instantiate(cfg.domain)
    assert domain.sample_shape == (32, 32, 1) and domain.num_classes == 10
    assert isinstance(domain.codec, IdentityCodec)  # pixel space: no VAE
    batch = next(domain.train_data(16, seed=0))
    x, cond = batch["x"], batch["cond"]
    assert x.shape == (16, 32, 32, 1) and x.dtype == np.float32 and cond.shape == (16,) and cond.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.0
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (x[:, border] == -1.0).all()  # 28 -> 32: two rows and columns of background on every side
    np.testing.assert_array_equal(domain.codec.encode(x), x)

    images, labels = clothes(NUM_TRAIN, 0)
    for picture, label in zip(x, cond):
        inner = np.round((picture[2:30, 2:30, 0] + 1) * 127.5).astype(np.uint8)
        (match,) = np.flatnonzero((images == inner).all(axis=(1, 2)))  # unflipped: every batch image is a training image
        assert labels[match] == label
    all_images, all_labels = domain.labelled_images("eval")
    assert all_images.shape == (NUM_EVAL, 32, 32, 1) and all_images.dtype == np.uint8
    np.testing.assert_array_equal(all_images[:, 2:30, 2:30, 0], clothes(NUM_EVAL, 1)[0])
    np.testing.assert_array_equal(all_labels, clothes(NUM_EVAL, 1)[1])


@pytest.mark.parametrize("args, expected", [
    (["domain.space=latent"], "domain.channels=1: the VAE of space=latent takes RGB"),
    (["domain.fit=stretch"], "domain.fit=stretch: accepted: crop, pad."),
    (["domain.evaluator=is"], "domain.evaluator=is: accepted: fid, classifier."),
    (["domain.judge.epochs=0"], "domain.judge.epochs=0: must be at least 1."),
    (["domain.image_size=24"], "does not fit in 24x24"),
])
def test_impossible_settings_fail_in_one_line(idx_dir, args, expected):
    with pytest.raises((ConfigError, ValueError), match=re.escape(expected)):
        cfg = fmnist(idx_dir, *args)
        next(instantiate(cfg.domain).train_data(4, 0))


# ------------------------------------------------------------------------------ classifier evaluation


def fake_sample_fn(key, num_steps, num_samples, cond=None, noise=None, noise_scale=1.0):
    """Stands in for a model: smooth noise whose level depends on the budget, deterministic in the key."""
    x = noise if noise is not None else jax.random.normal(key, (num_samples, 32, 32, 1))
    return jnp.tanh(x - 2.0 + 1.0 / num_steps)


def test_classifier_evaluation_is_reproducible_and_draws_grey_grids(idx_dir, tmp_path):
    cfg = fmnist(idx_dir, f"domain.cache_dir={tmp_path / 'cache'}", "domain.eval_samples=20", "domain.eval_batch_size=8",
                 "domain.vis.num_samples=3", "domain.vis.interpolation_points=2", "domain.vis.classes=[0,1]", *TINY_JUDGE)
    domain = instantiate(cfg.domain)
    first = domain.evaluate(fake_sample_fn, [1, 2], tmp_path / "a")
    assert sorted(first) == ["class_acc@1", "class_acc@2", "fd_fmnist@1", "fd_fmnist@2", "fd_fmnist_floor"]
    assert all(isinstance(v, float) and np.isfinite(v) for v in first.values())
    assert first["fd_fmnist_floor"] < first["fd_fmnist@1"]  # real images are closer than noise
    record = json.loads((tmp_path / "a" / "fd.json").read_text())
    assert len(record["judge_sha1"]) == 40 and record["num_samples"] == 20 and record["num_reference"] == NUM_EVAL
    assert record["fd_fmnist@1"] == first["fd_fmnist@1"] and (tmp_path / "a" / "fd_vs_steps.png").is_file()

    # A fresh domain loads the cached judge: the same weights, the same numbers.
    again = instantiate(cfg.domain).evaluate(fake_sample_fn, [1, 2], tmp_path / "b")
    assert again == first
    assert json.loads((tmp_path / "b" / "fd.json").read_text())["judge_sha1"] == record["judge_sha1"]

    paths = domain.visualize(fake_sample_fn, [1, 2], tmp_path / "a")
    assert {p.name for p in paths} == {"grid_budgets.png", "interpolation.png", "classes_1steps.png", "classes_2steps.png"}
    grid = np.asarray(Image.open(tmp_path / "a" / "grid_budgets.png").convert("RGB"))
    assert grid.shape == (2 * (64 + 2) + 2, 64 + 3 * (64 + 2) + 2, 3)  # zoom 2: 32x32 shown as 64x64
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()


def test_tiny_run_through_the_command_line(idx_dir, tmp_path):
    from shortcutlib.run import main

    out = tmp_path / "run"
    args = [
        "domain=fmnist", f"domain.data_dir={idx_dir}", f"domain.cache_dir={tmp_path / 'cache'}", *TINY_JUDGE,
        "domain.eval_samples=20", "domain.eval_batch_size=10", "domain.vis.num_samples=2", "domain.vis.interpolation_points=2",
        "domain.vis.classes=[0]",
        "objective=flow_matching", "model.hidden=32", "model.depth=1", "model.num_heads=2",
        "train.steps=2", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=1", "train.ckpt_every=0",
        "eval.steps=[1]", "eval.visualize_steps=[1]", "logging.progress=false", f"out_dir={out}",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (evals,) = [r for r in rows if r["kind"] == "eval"]
    assert {"fd_fmnist@1", "class_acc@1", "fd_fmnist_floor"} <= set(evals)
    assert 0.0 <= evals["class_acc@1"] <= 1.0 and evals["fd_fmnist_floor"] >= 0.0
    assert json.loads((out / "samples" / "fd.json").read_text())["judge_sha1"]
    assert (out / "samples" / "grid_budgets.png").is_file()


@pytest.mark.skipif(not Path(sources.FASHION_MNIST_DEB_DIR).is_dir(), reason="Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
def test_the_installed_fashion_mnist_is_scored_by_the_shipped_judge():
    """The real data and the default judge settings hash to the key of the shipped judge, so every
    machine scores Fashion-MNIST with the judge of the published tables, never one retrained locally."""
    from domains.images.domain import to_model_range
    from shortcutlib.metrics import classifier_judge as cj

    domain = instantiate(compose_config(["experiment=fmnist_dit"]).domain)
    images, labels = domain.labelled_images("train")
    key = cj.cache_key(to_model_range(images), labels, 10, domain.judge_cfg)
    assert (cj.SHIPPED / f"classifier_judge_{key[:16]}.npz").is_file()
