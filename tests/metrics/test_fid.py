"""FID: the Inception port, its weights, the resize, the statistics and the distance.

The reference is pytorch-fid itself: its ``InceptionV3`` (built on torchvision)
and its ``calculate_frechet_distance``. Where the test extra (torch, torchvision,
pytorch-fid) is installed the tests compare against it live; everywhere they
compare against ``pytorch_fid_reference.npz``, outputs that pytorch-fid computed
for the same seeded random weights, images and statistics. Regenerate that file
with the extra installed:

    python -m tests.metrics.test_fid --write-reference

Nothing is downloaded: weights are random and seeded by tensor name.
"""

from __future__ import annotations

import argparse
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from shortcutlib.cli import convert_inception, fid_stats
from shortcutlib.metrics import fid
from shortcutlib.metrics import inception_weights as iw
from shortcutlib.metrics.inception import FIDInceptionV3

BATCH = 2  # one compiled network shape for the whole file
REFERENCE_FILE = Path(__file__).with_name("pytorch_fid_reference.npz")
# Feature-parity cases: name -> (image seed, count, size); 64x64 exercises the resize.
FEATURE_CASES = {"features_64": (11, 2, (64, 64)), "features_299": (12, 1, (299, 299))}
FRECHET_SEEDS = (0, 1, 2)


def _random_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Seeded by name, well scaled (activations neither vanish nor explode)."""
    rng = np.random.default_rng([7, zlib.crc32(name.encode())])
    if name.endswith("conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    if name.endswith("bn.weight"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name.endswith("bn.running_var"):
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if name.endswith(("bn.bias", "bn.running_mean")):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    raise KeyError(name)


def _random_state() -> dict[str, np.ndarray]:
    return {name: _random_tensor(name, shape) for name, shape in iw.state_dict_shapes().items()}


def _images(seed: int, n: int, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *size, channels)).astype(np.float32)


def _random_gaussians(seed: int, dim: int):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, dim, 2 * dim))
    return rng.normal(size=dim), a @ a.T / dim, rng.normal(size=dim), b @ b.T / dim


@pytest.fixture(scope="module")
def npz_weights(tmp_path_factory) -> Path:
    """The seeded random weights in the torch-free format, made without torch."""
    path = tmp_path_factory.mktemp("weights") / "fid_inception.npz"
    np.savez(path, **_random_state())
    return path


@pytest.fixture(scope="module")
def features(npz_weights) -> fid.InceptionFeatures:
    return fid.InceptionFeatures(npz_weights, batch_size=BATCH)


@pytest.fixture(scope="module")
def stored_reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE_FILE) as data:
        return dict(data)


def _assert_features_close(ours: np.ndarray, expected: np.ndarray) -> None:
    assert ours.shape == expected.shape
    # The features must carry signal, or agreement would prove little.
    assert np.abs(expected).mean() > 1e-2 and (expected > 0).mean() > 0.2
    assert np.std(expected, axis=-1).min() > 1e-2
    rel = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
    assert rel < 1e-4, rel
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


# ----------------------------------------------------------------------------- weights files


def test_missing_weights_names_the_file_to_supply(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth") as err:
        iw.load_inception(tmp_path / "absent.pth")
    assert str(tmp_path / "absent.pth") in str(err.value)
    monkeypatch.delenv(iw.WEIGHTS_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth"):
        fid.compute_statistics(iter([]), None)


def test_npz_loads_without_torch_and_pth_asks_for_it(npz_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    model = iw.load_inception(npz_weights)
    with np.load(npz_weights) as data:
        kernel = data["Mixed_6b.branch7x7_2.conv.weight"]  # (O, I, 1, 7)
        np.testing.assert_array_equal(model.Mixed_6b.branch7x7_2.kernel[...], kernel.transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(model.Mixed_7c.branch_pool.var[...], data["Mixed_7c.branch_pool.bn.running_var"])
    pth = tmp_path / iw.WEIGHTS_FILENAME
    pth.write_bytes(b"not read")
    with pytest.raises(ImportError, match=r"pip install torch.*shortcutlib\.cli\.convert_inception"):
        iw.load_inception(pth)


def test_weights_with_wrong_names_or_shapes_are_refused(npz_weights, tmp_path):
    with np.load(npz_weights) as data:
        state = dict(data)
    missing = {k: v for k, v in state.items() if k != "Mixed_5b.branch1x1.bn.bias"}
    with pytest.raises(KeyError, match="Mixed_5b.branch1x1.bn.bias"):
        iw.load_state_dict_into(FIDInceptionV3(), missing)
    wrong = dict(state, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5), np.float32)})
    with pytest.raises(ValueError, match="Conv2d_1a_3x3.conv.weight"):
        iw.load_state_dict_into(FIDInceptionV3(), wrong)
    extra = dict(state, **{"Mixed_8a.conv.weight": np.zeros(1, np.float32)})
    with pytest.raises(KeyError, match="Mixed_8a"):
        iw.load_state_dict_into(FIDInceptionV3(), extra)


# ----------------------------------------------------------------------------- statistics and distance


def test_running_statistics_match_numpy_cov():
    rng = np.random.default_rng(1)
    feats = rng.normal(3.0, 2.0, (37, 6)) @ rng.normal(size=(6, 6))
    stats = fid.RunningStatistics()
    for chunk in np.split(feats, [5, 6, 30]):
        stats.update(chunk)
    mu, sigma = stats.result()
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 images"):
        single = fid.RunningStatistics()
        single.update(feats[:1])
        single.result()


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
    sigma1, sigma2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    # Commuting covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2.
    expected = 13.0 + (2.0 - 1.0) ** 2 + (1.0 - 3.0) ** 2
    assert fid.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-12)
    mu, sigma, _, _ = _random_gaussians(2, 8)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-10


def _frechet_outputs(distance) -> np.ndarray:
    return np.array([distance(*_random_gaussians(seed, 32)) for seed in FRECHET_SEEDS], dtype=np.float64)


def test_frechet_distance_matches_stored_pytorch_fid_output(stored_reference):
    """pytorch-fid's values on well-conditioned covariances (its sqrtm path), to rounding."""
    np.testing.assert_allclose(_frechet_outputs(fid.frechet_distance), stored_reference["frechet"][: len(FRECHET_SEEDS)], rtol=1e-9)


def test_frechet_distance_of_singular_covariances_is_exact_and_silent():
    """Rank-deficient covariances (fewer samples than features) are where sqrtm warns; the
    eigendecomposition gives the exact value: equal commuting low-rank Gaussians are at 0."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0][:, :5]
    sigma1 = basis @ np.diag([4.0, 3.0, 2.0, 1.0, 0.5]) @ basis.T
    sigma2 = basis @ np.diag([1.0, 1.0, 1.0, 1.0, 2.0]) @ basis.T
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fid.frechet_distance(np.zeros(16), sigma1, np.zeros(16), sigma2)
        same = fid.frechet_distance(np.zeros(16), sigma1, np.zeros(16), sigma1)
    expected = sum((np.sqrt(a) - np.sqrt(b)) ** 2 for a, b in zip([4, 3, 2, 1, 0.5], [1, 1, 1, 1, 2]))
    assert value == pytest.approx(expected, rel=1e-9)
    assert abs(same) < 1e-9


def test_frechet_distance_refuses_a_matrix_that_is_no_covariance():
    indefinite = (np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        fid.frechet_distance(*indefinite)


def test_frechet_distance_matches_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    np.testing.assert_allclose(_frechet_outputs(fid.frechet_distance), _frechet_outputs(fid_score.calculate_frechet_distance), rtol=1e-9)


def test_statistics_roundtrip_and_missing_file(tmp_path):
    mu, sigma, _, _ = _random_gaussians(3, 4)
    path = fid.save_statistics(tmp_path / "ref_stats", mu, sigma)
    assert path == tmp_path / "ref_stats"
    loaded_mu, loaded_sigma = fid.load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    with pytest.raises(FileNotFoundError, match="shortcutlib.cli.fid_stats"):
        fid.load_statistics(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (512, 400), (299, 299)])
def test_resize_and_normalise_match_torch(size):
    torch = pytest.importorskip("torch")
    images = _images(4, 2, size)
    ours = np.asarray(fid.preprocess(images))
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2))
    theirs = torch.nn.functional.interpolate(nchw, size=(299, 299), mode="bilinear", align_corners=False)
    theirs = (2 * theirs - 1).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # The 1-D weights are torch's bit for bit: resize one-hot columns to read them off.
    for n in set(size):
        one_hot = torch.eye(n).reshape(n, 1, n, 1)
        torch_weights = torch.nn.functional.interpolate(one_hot, size=(299, 1), mode="bilinear", align_corners=False)
        np.testing.assert_array_equal(fid.resize_matrix(n, 299), torch_weights[:, 0, :, 0].numpy().T)


def test_resize_matrix_shrinks_without_antialias():
    # Halving: each output is the mean of exactly two inputs (an antialiased
    # resize would spread over four).
    weights = fid.resize_matrix(8, 4)
    np.testing.assert_array_equal(weights, np.kron(np.eye(4), [[0.5, 0.5]]))


def test_images_are_checked_and_converted():
    gray = np.full((1, 4, 4, 1), 255, np.uint8)
    np.testing.assert_array_equal(fid.to_unit_rgb(gray), np.ones((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid.to_unit_rgb(np.full((1, 4, 4, 3), -1.0, np.float32))
    with pytest.raises(ValueError, match="channels-last"):
        fid.to_unit_rgb(np.zeros((1, 3, 4, 4), np.float32))


# ----------------------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def self_statistics(features):
    images = _images(6, 3, (32, 32))
    mu, sigma = fid.compute_statistics([images[:1], images[1:]], features)
    return images, mu, sigma


def test_statistics_are_mean_and_covariance_of_features(features, self_statistics):
    images, mu, sigma = self_statistics
    feats = features(images).astype(np.float64)
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-8, atol=1e-12)


def test_fid_of_a_set_against_itself_is_zero_on_a_feature_block(self_statistics):
    # A 256-feature marginal: its square root takes a fraction of a second where
    # the full 2048 one takes about a minute of CPU (see the slow test below).
    _, mu, sigma = self_statistics
    block = slice(0, 256)
    distance = fid.frechet_distance(mu[block], sigma[block, block], mu[block], sigma[block, block])
    assert distance == pytest.approx(0.0, abs=1e-6 * np.trace(sigma[block, block]))


@pytest.mark.slow
def test_fid_of_a_set_against_itself_is_zero(features, self_statistics):
    images, mu, sigma = self_statistics
    assert fid.compute_fid([images], (mu, sigma), features) == pytest.approx(0.0, abs=1e-5 * np.trace(sigma))


def test_fid_stats_command(features, npz_weights, tmp_path):
    from PIL import Image

    images = (_images(8, BATCH, (24, 24)) * 255).round().astype(np.uint8)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(image_dir / f"{i:02d}.png")
    (image_dir / "notes.txt").write_text("not an image")
    np.save(tmp_path / "images.npy", images)

    expected_mu, expected_sigma = fid.compute_statistics([images], features)
    for source in (["--images-dir", str(image_dir)], ["--npy", str(tmp_path / "images.npy")]):
        out = tmp_path / f"stats_{source[0][2:]}.npz"
        fid_stats.main([*source, "--weights", str(npz_weights), "--out", str(out), "--batch-size", str(BATCH)])
        mu, sigma = fid.load_statistics(out)
        np.testing.assert_allclose(mu, expected_mu, rtol=1e-6)
        np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-5, atol=1e-7 * np.abs(expected_sigma).max())


# ----------------------------------------------------------------------------- parity with pytorch-fid


def _pytorch_fid_model(state: dict[str, np.ndarray]):
    """pytorch-fid's InceptionV3 (pool3 block) holding ``state``; its download is replaced."""
    import torch
    from pytorch_fid import inception as pfid

    # The reference's own constructor gives the full layout (fc, num_batches_tracked).
    layout = pfid._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
    full = {name: torch.from_numpy(state[name]) if name in state else value for name, value in layout.items()}
    original = pfid.load_state_dict_from_url
    pfid.load_state_dict_from_url = lambda *args, **kwargs: full
    try:
        model = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfid.load_state_dict_from_url = original
    return model, full


def _pytorch_fid_features(model, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(images.transpose(0, 3, 1, 2)))[0]
    return out.squeeze(3).squeeze(2).numpy()


def _pytorch_fid_outputs(model) -> dict[str, np.ndarray]:
    from pytorch_fid import fid_score

    outputs = {name: _pytorch_fid_features(model, _images(*case)) for name, case in FEATURE_CASES.items()}
    outputs["frechet"] = _frechet_outputs(fid_score.calculate_frechet_distance)
    return outputs


@pytest.fixture(scope="module")
def live_reference(tmp_path_factory):
    """pytorch-fid's outputs, computed now, and its weights saved as a .pth."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_fid.inception")
    model, full_state = _pytorch_fid_model(_random_state())
    pth = tmp_path_factory.mktemp("pth") / iw.WEIGHTS_FILENAME
    torch.save(full_state, pth)
    return _pytorch_fid_outputs(model), pth


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_pool3_features_match_stored_pytorch_fid_output(features, stored_reference, case):
    _assert_features_close(features(_images(*FEATURE_CASES[case])), stored_reference[case])


@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_pool3_features_match_pytorch_fid(live_reference, stored_reference, case):
    outputs, pth = live_reference
    ours = fid.InceptionFeatures(pth, batch_size=BATCH)(_images(*FEATURE_CASES[case]))
    _assert_features_close(ours, outputs[case])
    # The stored outputs are what pytorch-fid computes (up to its own run-to-run noise).
    np.testing.assert_allclose(stored_reference[case], outputs[case], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def pth_weights(tmp_path_factory) -> Path:
    """The seeded weights as a torch state_dict, with the tensors the features do not use."""
    torch = pytest.importorskip("torch")
    state = {name: torch.from_numpy(value) for name, value in _random_state().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path_factory.mktemp("pth") / iw.WEIGHTS_FILENAME
    torch.save(state, path)
    return path


def test_pth_and_its_npz_conversion_give_identical_features(pth_weights, features, tmp_path):
    out = tmp_path / "converted.npz"
    convert_inception.main(["--pth", str(pth_weights), "--out", str(out)])
    with np.load(out) as data:
        assert not any(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in data.files)
    images = _images(12, BATCH, (40, 40))
    from_pth = fid.InceptionFeatures(pth_weights, batch_size=BATCH)(images)
    np.testing.assert_array_equal(fid.InceptionFeatures(out, batch_size=BATCH)(images), from_pth)
    np.testing.assert_array_equal(features(images), from_pth)


def _write_reference() -> None:
    from importlib.metadata import version

    import torch
    import torchvision

    model, _ = _pytorch_fid_model(_random_state())
    outputs = _pytorch_fid_outputs(model)
    made_with = (
        f"pytorch-fid {version('pytorch-fid')}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    np.savez(REFERENCE_FILE, made_with=np.array(made_with), **outputs)
    print(f"wrote {REFERENCE_FILE} ({made_with})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Regenerate the stored pytorch-fid outputs.")
    parser.add_argument("--write-reference", action="store_true", required=True)
    parser.parse_args()
    _write_reference()
