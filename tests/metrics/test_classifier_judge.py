"""The classifier judge on tiny synthetic images: deterministic training, its cache, features, Fréchet distances."""

from __future__ import annotations

import numpy as np
import pytest

from shortcutlib.metrics import classifier_judge as cj
from shortcutlib.metrics.classifier_judge import ClassifierJudge, JudgeConfig

TINY = JudgeConfig(conv_channels=[4, 8], features=16, epochs=2, batch_size=16, lr=3e-3, seed=0)
NUM_CLASSES = 3


def bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """12x12 grey images in [-1, 1]: class c is a bright horizontal bar in band c, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int32) % NUM_CLASSES
    images = rng.normal(-0.8, 0.1, (n, 12, 12, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, 4 * c : 4 * c + 3] += 1.5
    return np.clip(images, -1, 1), labels


@pytest.fixture(scope="module")
def data():
    return bars(96, seed=0)


def test_training_is_deterministic_and_learns(data):
    images, labels = data
    a = cj.train_classifier(images, labels, NUM_CLASSES, TINY)
    b = cj.train_classifier(images, labels, NUM_CLASSES, TINY)
    wa, wb = cj.flat_weights(a), cj.flat_weights(b)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])
    judge = ClassifierJudge(a)
    assert judge.sha1 == ClassifierJudge(b).sha1 == cj.weights_sha1(wa) and len(judge.sha1) == 40
    other = cj.train_classifier(images, labels, NUM_CLASSES, JudgeConfig(**{**vars(TINY), "seed": 1}))
    assert ClassifierJudge(other).sha1 != judge.sha1

    test_images, test_labels = bars(30, seed=1)
    assert judge.accuracy(test_images, test_labels) > 0.9
    features, predictions = judge.features_and_predictions(test_images)
    assert features.shape == (30, TINY.features) and predictions.shape == (30,)
    assert (features >= 0).all()  # ReLU activations


def test_chunked_features_equal_one_pass(data):
    images, labels = data
    judge = ClassifierJudge(cj.train_classifier(images, labels, NUM_CLASSES, TINY), batch_size=7)
    whole = ClassifierJudge(judge.model, batch_size=1000)
    np.testing.assert_allclose(judge.features(images[:20]), whole.features(images[:20]), rtol=1e-5, atol=1e-6)


def test_frechet_of_a_set_to_itself_is_zero_and_separates_classes(data):
    images, labels = data
    judge = ClassifierJudge(cj.train_classifier(images, labels, NUM_CLASSES, TINY))
    features = judge.features(images)
    assert abs(cj.frechet_from_features(features, features)) < 1e-6
    same = cj.frechet_from_features(judge.features(bars(96, seed=2)[0]), features)
    one_class = cj.frechet_from_features(judge.features(images[labels == 0]), features)
    assert same < one_class  # a fresh draw of the same distribution is closer than one class alone


def test_cache_stores_weights_and_their_hash(data, tmp_path, monkeypatch, caplog):
    images, labels = data
    first = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path)
    (path,) = tmp_path.glob("classifier_judge_*.npz")
    with np.load(path) as stored:
        assert str(stored["sha1"]) == first.sha1 and str(stored["key"]) == first.key

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been loaded")

    monkeypatch.setattr(cj, "train_classifier", no_training)
    again = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path)
    assert again.sha1 == first.sha1
    np.testing.assert_array_equal(again.features(images[:5]), first.features(images[:5]))
    monkeypatch.undo()

    # The key covers the data, the labels and every setting.
    key = cj.cache_key(images, labels, NUM_CLASSES, TINY)
    assert key == first.key
    assert cj.cache_key(images[::-1].copy(), labels, NUM_CLASSES, TINY) != key
    assert cj.cache_key(images, np.roll(labels, 1), NUM_CLASSES, TINY) != key
    assert cj.cache_key(images, labels, NUM_CLASSES, JudgeConfig(**{**vars(TINY), "epochs": 3})) != key
    assert cj.cache_key(images, labels, NUM_CLASSES, JudgeConfig(**{**vars(TINY), "features": 8})) != key

    # Weights that no longer match their recorded hash are not trusted: trained again, same result.
    with np.load(path) as stored:
        contents = {name: stored[name] for name in stored.files}
    contents["w:head/bias"] = contents["w:head/bias"] + 1.0
    with open(path, "wb") as f:
        np.savez(f, **contents)
    with caplog.at_level("WARNING"):
        retrained = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path)
    assert "does not match" in caplog.text and retrained.sha1 == first.sha1


def test_impossible_settings_name_the_key():
    from shortcutlib.config import ConfigError

    with pytest.raises(ConfigError, match=r"^judge\.epochs=0: must be at least 1\.$"):
        JudgeConfig(epochs=0).check("judge.")
    with pytest.raises(ConfigError, match="conv_channels"):
        cj.train_classifier(np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int32), 2, JudgeConfig(conv_channels=[]))


def restamp(path, weights: dict[str, np.ndarray], key: str, sha1: str | None = None) -> None:
    """Write a judge file the way the cache does, with ``sha1`` recorded (default: the weights' own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, sha1=sha1 or cj.weights_sha1(weights), key=key, **{f"w:{k}": v for k, v in weights.items()})


def test_a_shipped_judge_wins_over_the_cache_and_a_tampered_one_is_skipped(data, tmp_path, monkeypatch, caplog):
    images, labels = data
    cached = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path / "cache", shipped=None)
    name = f"classifier_judge_{cached.key[:16]}.npz"
    # Another machine's judge of the same key: same data and settings, other weights.
    other = {k: v * 1.01 for k, v in cj.flat_weights(cached.model).items()}
    restamp(tmp_path / "shipped" / name, other, cached.key)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored judge should have been loaded")

    monkeypatch.setattr(cj, "train_classifier", no_training)
    shipped = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path / "cache", shipped=tmp_path / "shipped")
    assert shipped.sha1 == cj.weights_sha1(other) != cached.sha1
    np.testing.assert_allclose(cj.flat_weights(shipped.model)["head/bias"], other["head/bias"])

    restamp(tmp_path / "shipped" / name, other, cached.key, sha1=cached.sha1)  # weights that are not the ones recorded
    with caplog.at_level("WARNING"):
        fallback = ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path / "cache", shipped=tmp_path / "shipped")
    assert "does not match" in caplog.text and fallback.sha1 == cached.sha1

    restamp(tmp_path / "shipped" / name, other, "0" * 40)  # trained under another key: not this judge
    assert ClassifierJudge.fit_or_load(images, labels, NUM_CLASSES, TINY, tmp_path / "cache", shipped=tmp_path / "shipped").sha1 == cached.sha1


@pytest.mark.parametrize("path", sorted(cj.SHIPPED.glob("*.npz")), ids=lambda p: p.name)
def test_shipped_judges_are_intact(path):
    """Each shipped judge's weights hash to the SHA-1 recorded beside them, it is named by its key,
    and it fits the default architecture on 32x32 grey images of 10 classes (the Fashion-MNIST domain)."""
    with np.load(path) as stored:
        weights = {name[len("w:") :]: stored[name] for name in stored.files if name.startswith("w:")}
        sha1, key = str(stored["sha1"]), str(stored["key"])
    assert cj.weights_sha1(weights) == sha1 and path.name == f"classifier_judge_{key[:16]}.npz"
    config = JudgeConfig()
    from flax import nnx

    model = cj.ConvClassifier((32, 32, 1), 10, config.conv_channels, config.features, rngs=nnx.Rngs(0))
    assert cj._load_verified(model, path, key) and ClassifierJudge(model).sha1 == sha1


def test_the_fashion_mnist_judge_is_shipped():
    assert any(cj.SHIPPED.glob("*.npz")), "the Fashion-MNIST judge of the published tables should ship with the package"
