"""Image pipeline end to end on tiny data: pre-encoding (resumable), latent reading, the domain,
a few training steps, FID at several budgets against reference statistics from the ref-stats command.

Tiny stand-ins: 16x16 images, a random 2-block VAE (16x16x3 -> 8x8x4), a 1-block DiT, and the
FID Inception with random weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domains.images import encode_latents
from domains.images import latents as latents_mod
from domains.images.domain import ImageConfig, ImageDomain
from domains.images.preprocess import to_model_range
from domains.images.ref_stats import main as ref_stats_main
from domains.images.sources import image_batches, open_source, ordered_batches
from shortcutlib.config import typed

pytest.importorskip("safetensors")

IMAGE_SIZE = 16
LATENT_SHAPE = (8, 8, 4)
CLASSES = ("ant", "bee")
PER_CLASS = 5


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """A random diffusers-format VAE folder (config.json + safetensors), loadable by load_vae.

    Weights are drawn with numpy for the abstract model's shapes: initialising the
    module eagerly dispatches one small program per parameter, slow on a busy CPU.
    """
    from flax import nnx
    from safetensors.numpy import save_file

    from domains.images.vae import AutoencoderKL, VAEConfig
    from domains.images.vae_weights import diffusers_key, to_torch_layout

    config = VAEConfig(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4, sample_size=IMAGE_SIZE)
    abstract = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    tensors = {}
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        shape = var.value.shape
        if path[-1] == "kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        elif path[-1] == "scale":
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0.0, 0.05, shape)
        tensors[diffusers_key(path)] = np.ascontiguousarray(to_torch_layout(value.astype(np.float32)))
    folder = tmp_path_factory.mktemp("vae")
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def codec(vae_dir):
    from domains.images.vae import VAECodec, load_vae

    return VAECodec(load_vae(vae_dir), chunk_size=4)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Two classes of smooth random pictures, not square, so the centre crop matters."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
            image = Image.fromarray(small).resize((24, 18), Image.Resampling.BILINEAR)
            image.save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def inception_npz(tmp_path_factory) -> Path:
    """The FID Inception with random, well-scaled weights in the torch-free .npz format."""
    from shortcutlib.metrics import inception_weights as iw

    rng = np.random.default_rng(0)
    state = {}
    for name, shape in iw.state_dict_shapes().items():
        if name.endswith("conv.weight"):
            state[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif name.endswith(("bn.weight", "bn.running_var")):
            state[name] = rng.uniform(0.5, 1.5, shape)
        else:
            state[name] = rng.normal(0.0, 0.1, shape)
    path = tmp_path_factory.mktemp("inception") / "fid_inception.npz"
    np.savez(path, **{k: v.astype(np.float32) for k, v in state.items()})
    return path


def _encode(source, codec, out, **kw):
    return latents_mod.encode_dataset(
        source, codec, out, source_name="image_folder", image_size=IMAGE_SIZE, batch_size=2, shard_size=4,
        num_workers=2, progress=False, **kw
    )


def _read_all(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    meta = latents_mod.read_meta(directory)
    shards = range(meta["num_shards"])
    return (
        np.concatenate([np.load(latents_mod.shard_paths(directory, s)[0]) for s in shards]),
        np.concatenate([np.load(latents_mod.shard_paths(directory, s)[1]) for s in shards]),
    )


@pytest.fixture(scope="module")
def cli_latents(image_dir, vae_dir, tmp_path_factory) -> Path:
    """The dataset pre-encoded with flips by the command users run."""
    out = tmp_path_factory.mktemp("latents") / "image_folder"
    args = ["--source", "image_folder", "--data-dir", str(image_dir), "--vae", str(vae_dir), "--out", str(out),
            "--image-size", str(IMAGE_SIZE), "--batch-size", "2", "--shard-size", "4", "--num-workers", "2", "--flip"]
    assert encode_latents.main(args) == 0
    return out


def _domain_cfg(image_dir, vae_dir, **extra):
    return typed(ImageConfig, {
        "name": "image_folder",
        "source": "image_folder",
        "data_dir": str(image_dir),
        "vae_path": str(vae_dir),
        "vae_batch_size": 5,
        "image_size": IMAGE_SIZE,
        "latent_shape": list(LATENT_SHAPE),
        "num_classes": None,
        "flip": True,
        "num_workers": 2,
        "vis": {"num_samples": 2, "interpolation_points": 3},
        **extra,
    }, "domain")


# ------------------------------------------------------------------------------ pre-encoding


def test_pre_encoding_resumes_after_an_interruption(image_dir, codec, cli_latents, tmp_path):
    source = open_source("image_folder", "train", image_dir)
    meta = latents_mod.read_meta(cli_latents)
    assert meta["classes"] == list(CLASSES) and meta["num_shards"] == 3 and meta["latent_shape"] == list(LATENT_SHAPE)

    out = tmp_path / "resumed"
    _encode(source, codec, out, flip=True, max_shards=1)  # "interrupted" after one shard
    assert latents_mod.shard_complete(out, 0) and not latents_mod.shard_complete(out, 1)
    with pytest.raises(latents_mod.DataMissingError, match="rerun the same"):
        latents_mod.LatentSource(out)
    first = latents_mod.shard_paths(out, 0)[0].stat().st_mtime_ns
    _encode(source, codec, out, flip=True)
    assert latents_mod.shard_paths(out, 0)[0].stat().st_mtime_ns == first  # skipped, not rewritten
    assert not list(out.glob(".*tmp*"))

    # The resumed result is the uninterrupted one (written by the CLI).
    (z_resumed, y_resumed), (z_cli, y_cli) = _read_all(out), _read_all(cli_latents)
    assert z_resumed.shape == (len(source), 2, *LATENT_SHAPE) and z_resumed.dtype == np.float16
    np.testing.assert_array_equal(z_resumed, z_cli)
    np.testing.assert_array_equal(y_resumed, y_cli)
    np.testing.assert_array_equal(y_cli, source.labels)

    # Stored values: the codec's scaled posterior mean of the centre crop, and of its mirror image.
    crops = next(image_batches(source, ordered_batches(np.arange(len(source)), len(source)), image_size=IMAGE_SIZE))["images"]
    expected = np.asarray(codec.encode(to_model_range(crops)))
    mirrored = np.asarray(codec.encode(to_model_range(crops[:, :, ::-1])))
    np.testing.assert_allclose(z_cli[:, 0], expected, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(z_cli[:, 1], mirrored, atol=2e-3, rtol=2e-3)
    assert np.abs(mirrored - expected[:, :, ::-1]).max() > 1e-2  # why flips are stored, not applied to latents

    with pytest.raises(ValueError, match="other settings"):
        _encode(source, codec, out, flip=False)


def test_latent_source_batches_shards_and_flips(cli_latents):
    stored, labels = _read_all(cli_latents)
    lat = latents_mod.LatentSource(cli_latents)
    assert (len(lat), lat.num_classes, lat.latent_shape) == (2 * PER_CLASS, 2, LATENT_SHAPE)
    np.testing.assert_array_equal(lat.read([7, 2, 5], variant=np.array([1, 0, 1])), stored[[7, 2, 5], [1, 0, 1]])

    # Process 1 of 2 reads the odd indices; 5 of them make one batch of 3 per epoch.
    batches = lat.batches(3, seed=1, process_index=1, process_count=2)
    drawn = [next(batches) for _ in range(4)]
    variants_used = set()
    for b in drawn:
        assert b["x"].shape == (3, *LATENT_SHAPE) and b["x"].dtype == np.float32
        for x, y in zip(b["x"], b["cond"]):
            ((i, v),) = [(i, v) for i in range(len(lat)) for v in (0, 1) if np.array_equal(x, stored[i, v])]
            assert i % 2 == 1 and y == labels[i]
            variants_used.add(v)
    assert variants_used == {0, 1}  # random flips pick either stored latent
    resumed = lat.batches(3, seed=1, start_batch=2, process_index=1, process_count=2)
    for b in drawn[2:]:
        np.testing.assert_array_equal(next(resumed)["x"], b["x"])


# ------------------------------------------------------------------------------ the domain, end to end


def test_pixel_and_latent_domains_see_the_same_stream(image_dir, vae_dir, cli_latents):
    pixels = ImageDomain(_domain_cfg(image_dir, vae_dir))
    latent = ImageDomain(_domain_cfg(image_dir, vae_dir, latents_dir=str(cli_latents)))
    assert pixels.num_classes == latent.num_classes == 2 and pixels.sample_shape == latent.sample_shape == LATENT_SHAPE

    batch = next(pixels.train_data(5, seed=3, start_batch=1))
    assert batch["x"].shape == (5, IMAGE_SIZE, IMAGE_SIZE, 3) and batch["x"].dtype == np.float32
    assert -1.0 <= batch["x"].min() and batch["x"].max() <= 1.0 and batch["cond"].dtype == np.int32
    z = np.asarray(pixels.codec.encode(batch["x"]))
    # Same seed and batch number: the same examples with the same flips, already encoded.
    lat_batch = next(latent.train_data(5, seed=3, start_batch=1))
    np.testing.assert_array_equal(lat_batch["cond"], batch["cond"])
    np.testing.assert_allclose(lat_batch["x"], z, atol=2e-3, rtol=2e-3)
    assert latent.codec.encode(lat_batch["x"]) is lat_batch["x"]  # identity on latents
    np.testing.assert_allclose(np.asarray(latent.codec.decode(z)), np.asarray(pixels.codec.decode(z)), atol=1e-6)
    assert latent.sample_cond(5, seed=0).tolist() == pixels.sample_cond(5, seed=0).tolist()
    assert set(latent.sample_cond(50, seed=1).tolist()) == {0, 1}


def test_generate_draws_no_more_than_asked(image_dir, vae_dir):
    """Every sampler call has one shape, the batch size; a request below it draws only what it needs."""
    import jax.numpy as jnp

    domain = ImageDomain(_domain_cfg(image_dir, vae_dir))
    sizes = []

    def sample_fn(key, num_steps, batch_size, cond):
        sizes.append(batch_size)
        assert len(cond) == batch_size
        return jnp.zeros((batch_size, *domain.sample_shape))

    images = np.concatenate(list(domain.generate(sample_fn, 2, 3, 500)))
    assert images.shape[0] == 3 and sizes == [3]
    sizes.clear()
    images = np.concatenate(list(domain.generate(sample_fn, 2, 7, 3, labels=np.arange(7) % 2)))
    assert images.shape[0] == 7 and sizes == [3, 3, 3]


def _frechet_low_rank(mu1, sigma1, mu2, sigma2, probes: int = 32):
    """The Fréchet distance for a ``sigma1`` of rank below ``probes`` (the covariance of a few images).

    With sigma1 = F F^T, tr sqrt(S1 S2) = sum sqrt(eig(F^T S2 F)), a probes x probes problem: the
    value of the sqrtm form (tested against pytorch-fid in tests/metrics) at a tiny cost at 2048 dims.
    """
    q, _ = np.linalg.qr(sigma1 @ np.random.default_rng(0).normal(size=(len(sigma1), probes)))
    w, u = np.linalg.eigh(q.T @ sigma1 @ q)
    factor = (q @ u) * np.sqrt(np.clip(w, 0.0, None))
    np.testing.assert_allclose(factor @ factor.T, sigma1, atol=1e-9 * np.abs(sigma1).max())  # the rank was low enough
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(factor.T @ sigma2 @ factor), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def test_train_then_fid_at_every_budget(image_dir, vae_dir, inception_npz, cli_latents, tmp_path, monkeypatch):
    from shortcutlib.config import compose_config
    from shortcutlib.inference import make_sample_fn
    from shortcutlib.metrics import fid
    from shortcutlib.train.loop import train

    monkeypatch.setattr(fid, "frechet_distance", _frechet_low_rank)

    # Reference statistics with the command users run, over the same centre crops.
    stats = tmp_path / "ref.npz"
    assert ref_stats_main(["--source", "image_folder", "--data-dir", str(image_dir), "--weights", str(inception_npz),
                           "--out", str(stats), "--image-size", str(IMAGE_SIZE), "--batch-size", "5", "--num-workers", "2"]) == 0

    cfg = compose_config(
            [
                "domain=image_folder",
                "model=dit_s",
                "model.size=null", "model.hidden=32", "model.depth=1", "model.num_heads=2",
                f"domain.data_dir={image_dir}", f"domain.vae_path={vae_dir}", f"domain.latents_dir={cli_latents}",
                f"domain.image_size={IMAGE_SIZE}", f"domain.latent_shape=[{','.join(map(str, LATENT_SHAPE))}]",
                "domain.vae_batch_size=5", "domain.num_workers=2",
                f"domain.fid.weights={inception_npz}", f"domain.fid.ref_stats={stats}",
                "domain.fid.num_samples=5", "domain.fid.batch_size=5", "domain.fid.inception_batch_size=5",
                "domain.vis.num_samples=2", "domain.vis.interpolation_points=3",
                "objective.M=4",
                "train.batch_size=4", "train.steps=3", "train.log_every=1", "train.ckpt_every=0",
                "logging.progress=false",
            ],
        )
    domain = ImageDomain(cfg.domain)
    result = train(cfg, domain, tmp_path / "run")
    assert int(result.state.step) == 3
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in logged if "loss" in m]
    assert len(losses) == 3 and all(np.isfinite(losses))

    sample_fn = make_sample_fn(result.run.graphdef, result.state.ema_params, result.run.objective, domain.sample_shape,
                               cfg_scale=1.5, num_classes=domain.num_classes)
    metrics = domain.evaluate(sample_fn, [1, 2], tmp_path / "samples")
    assert sorted(metrics) == ["fid@1", "fid@2"]
    assert (tmp_path / "samples" / "fid_vs_steps.png").is_file()
    assert json.loads((tmp_path / "samples" / "fid.json").read_text())["fid@2"] == metrics["fid@2"]

    # The same number, computed independently from the same samples.
    mu_ref, sigma_ref = fid.load_statistics(stats)
    features = fid.InceptionFeatures(inception_npz, batch_size=5)
    images = np.concatenate(list(domain.generate(sample_fn, 2, 5, 5, seed=0)))
    assert images.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    mu, sigma = fid.compute_statistics([images], features)
    assert metrics["fid@2"] == pytest.approx(_frechet_low_rank(mu, sigma, mu_ref, sigma_ref), rel=1e-9)
    # The reference statistics are those of the data's centre crops.
    crops = np.concatenate(list(domain.reference_images("train", batch_size=5)))
    mu, sigma = fid.compute_statistics([crops], features)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-6, atol=1e-6 * np.abs(mu_ref).max())
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-5, atol=1e-6 * np.abs(sigma_ref).max())

    paths = domain.visualize(sample_fn, [1, 2], tmp_path / "samples")
    assert sorted(p.name for p in paths) == ["classes_1steps.png", "classes_2steps.png", "grid_budgets.png", "interpolation.png"]
    grid = np.asarray(Image.open(tmp_path / "samples" / "grid_budgets.png"))
    assert grid.shape == (2 * (IMAGE_SIZE + 2) + 2, 64 + 2 * (IMAGE_SIZE + 2) + 2, 3)
    strip = np.asarray(Image.open(tmp_path / "samples" / "interpolation.png"))
    assert strip.shape == (2 * (IMAGE_SIZE + 2) + 2, 64 + 3 * (IMAGE_SIZE + 2) + 2, 3)


def test_missing_fid_inputs_are_explained(image_dir, vae_dir, tmp_path):
    domain = ImageDomain(_domain_cfg(image_dir, vae_dir, fid={"weights": None, "ref_stats": None}))
    with pytest.raises(FileNotFoundError, match="domain.fid.weights"):
        domain.evaluate(lambda *a, **k: None, [1], tmp_path)
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"")
    domain = ImageDomain(_domain_cfg(image_dir, vae_dir, fid={"weights": str(weights), "ref_stats": None}))
    with pytest.raises(FileNotFoundError, match="domains.images.ref_stats"):
        domain.evaluate(lambda *a, **k: None, [1], tmp_path)
