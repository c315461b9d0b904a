"""A classifier judge: a small CNN trained once on labelled images, whose penultimate layer is the
feature space of a Fréchet distance and whose predictions check class-conditional samples.

FID's Inception features come from ImageNet photographs; for small grey datasets a classifier
trained on the data itself is the honest judge. Training is deterministic (fixed seed, fixed
number of epochs, a data order drawn from the seed) and cached on disk under a key that hashes
the training data, the architecture and the training settings; the cache file also stores a
SHA-1 of the weights, so an evaluation can name exactly which judge scored it.

Deterministic is not portable: XLA's CPU kernels differ between instruction sets, so the same
training on another CPU gives another judge, and distances in its features do not compare. The
judges behind the published tables are therefore shipped with the package (``SHIPPED``, named by
their key) and take precedence over the cache, as FID loads fixed Inception weights.

Knows nothing of any dataset: images are (N, H, W, C) floats (any range, as long as the same
range is used for training and judging), labels int in [0, num_classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shortcutlib.config import require
from shortcutlib.metrics.frechet import frechet_distance

log = logging.getLogger(__name__)

# Part of the cache key: bump it whenever the architecture or the training procedure changes.
ARCHITECTURE_VERSION = "conv-pool-dense/1"
# Judges shipped with the package, one file per key (a cache file, copied): every machine scores with these.
SHIPPED = Path(__file__).parent / "judges"


@dataclass
class JudgeConfig:
    """The judge's architecture and training settings; all of them enter the cache key."""

    conv_channels: list[int] = field(default_factory=lambda: [32, 64])  # 3x3 conv + 2x2 average pool each
    features: int = 128  # width of the penultimate layer: the Fréchet feature space
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1.0e-3
    seed: int = 0

    def check(self, prefix: str = "") -> None:
        """Raise ``ConfigError`` naming ``prefix + key`` for an impossible value. Called by the config
        that nests this one (a ``__post_init__`` here would name the key without its group)."""
        require(len(self.conv_channels) >= 1 and all(c >= 1 for c in self.conv_channels), f"{prefix}conv_channels",
                self.conv_channels, "must list at least one positive width.")
        require(self.features >= 2, f"{prefix}features", self.features, "must be at least 2.")
        require(self.epochs >= 1, f"{prefix}epochs", self.epochs, "must be at least 1.")
        require(self.batch_size >= 1, f"{prefix}batch_size", self.batch_size, "must be at least 1.")
        require(self.lr > 0, f"{prefix}lr", self.lr, "must be positive.")


class ConvClassifier(nnx.Module):
    """[3x3 conv -> ReLU -> 2x2 average pool] per width, flatten, dense -> ReLU (the features), dense -> logits."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, conv_channels: list[int], features: int, *, rngs: nnx.Rngs):
        h, w, c = image_shape
        convs = []
        for width in conv_channels:
            convs.append(nnx.Conv(c, width, kernel_size=(3, 3), padding="SAME", rngs=rngs))
            c, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"images of shape {image_shape} are too small for {len(conv_channels)} pooling stages.")
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(h * w * c, features, rngs=rngs)
        self.head = nnx.Linear(features, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nnx.avg_pool(nnx.relu(conv(x)), window_shape=(2, 2), strides=(2, 2))
        return nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- hashing


def cache_key(images: np.ndarray, labels: np.ndarray, num_classes: int, config: JudgeConfig) -> str:
    """SHA-1 of the training data (bytes, shape, dtype), the architecture and the settings."""
    digest = hashlib.sha1()
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(labels, np.int64)
    digest.update(repr((images.shape, str(images.dtype), labels.shape, num_classes)).encode())
    digest.update(memoryview(images).cast("B"))
    digest.update(memoryview(labels).cast("B"))
    digest.update(repr((ARCHITECTURE_VERSION, sorted(dataclasses.asdict(config).items()))).encode())
    return digest.hexdigest()


def flat_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """The parameters by path ("convs/0/kernel", ...), as float32 numpy arrays."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): np.asarray(var.value, np.float32) for path, var in flat}


def weights_sha1(weights: dict[str, np.ndarray]) -> str:
    """SHA-1 over the parameters in path order (names, shapes and little-endian float32 bytes)."""
    digest = hashlib.sha1()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], "<f4")
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _load_weights(model: nnx.Module, weights: dict[str, np.ndarray]) -> None:
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    names = {"/".join(map(str, path)) for path, _ in flat}
    if names != set(weights):
        raise ValueError(f"stored judge weights do not match the architecture ({sorted(set(weights) ^ names)[:3]} ...).")
    for path, var in flat:
        stored = weights["/".join(map(str, path))]
        if stored.shape != var.value.shape:
            raise ValueError(f"stored judge weight {'/'.join(map(str, path))} has shape {stored.shape}, expected {var.value.shape}.")
        var.value = jnp.asarray(stored)
    nnx.update(model, nnx.from_flat_state(flat))


def _load_verified(model: nnx.Module, path: Path, key: str) -> bool:
    """Load the judge stored at ``path`` into ``model`` if it is there, was trained under ``key`` and its
    weights still hash to the SHA-1 recorded beside them; a file that fails the check is reported and skipped."""
    if not path.is_file():
        return False
    with np.load(path) as stored:
        weights = {name[len("w:") :]: stored[name] for name in stored.files if name.startswith("w:")}
        recorded = str(stored["sha1"]) if "sha1" in stored.files else ""
        recorded_key = str(stored["key"]) if "key" in stored.files else ""
    if recorded != weights_sha1(weights) or recorded_key != key:
        log.warning("Classifier judge %s does not match its recorded hashes: not used.", path)
        return False
    _load_weights(model, weights)
    log.info("Classifier judge loaded from %s (weights SHA-1 %s).", path, recorded)
    return True


# ---------------------------------------------------------------------------- training


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, config: JudgeConfig) -> ConvClassifier:
    """Adam on softmax cross-entropy; epoch ``e`` visits the full batches of the permutation drawn
    from ``(seed, e)`` (the remainder is skipped), so the result depends on nothing but the inputs."""
    config.check()
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"expected images (N, H, W, C) and N labels, got {images.shape} and {labels.shape}.")
    batch = min(config.batch_size, len(images))
    model = ConvClassifier(images.shape[1:], num_classes, list(config.conv_channels), config.features, rngs=nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.adam(config.lr)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any]:
        def loss_fn(p: Any) -> jax.Array:
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    per_epoch = len(images) // batch
    for epoch in range(config.epochs):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(images))
        for b in range(per_epoch):
            idx = order[b * batch : (b + 1) * batch]
            params, opt_state = step(params, opt_state, images[idx], labels[idx])
    return nnx.merge(graphdef, params)


# ---------------------------------------------------------------------------- the judge


class ClassifierJudge:
    """A trained classifier: features (penultimate activations), predictions, Fréchet distances."""

    def __init__(self, model: ConvClassifier, key: str = "", batch_size: int = 1000):
        self.model = model
        self.key = key
        self.sha1 = weights_sha1(flat_weights(model))
        self.batch_size = batch_size
        graphdef, params = nnx.split(model)

        @jax.jit
        def forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
            net = nnx.merge(graphdef, params)
            h = net.features(x)
            return h, net.head(h)

        self._forward = forward

    @classmethod
    def fit_or_load(
        cls, images: np.ndarray, labels: np.ndarray, num_classes: int, config: JudgeConfig, cache_dir: str | os.PathLike | None,
        shipped: str | os.PathLike | None = SHIPPED,
    ) -> ClassifierJudge:
        """The judge of ``(images, labels, config)``: the one shipped in ``shipped`` if there is one, else
        the one trained before in ``cache_dir``, else trained now and stored there."""
        key = cache_key(images, labels, num_classes, config)
        name = f"classifier_judge_{key[:16]}.npz"
        model = ConvClassifier(tuple(images.shape[1:]), num_classes, list(config.conv_channels), config.features, rngs=nnx.Rngs(config.seed))
        for folder in (shipped, cache_dir):
            if folder and _load_verified(model, Path(folder).expanduser() / name, key):
                return cls(model, key)
        log.info("Training the classifier judge (%d images, %d epochs).", len(images), config.epochs)
        model = train_classifier(images, labels, num_classes, config)
        judge = cls(model, key)
        if cache_dir:
            path = Path(cache_dir).expanduser() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:  # a file object keeps the name as given (no added .npz)
                np.savez(f, sha1=judge.sha1, key=key, **{f"w:{k}": v for k, v in flat_weights(model).items()})
            tmp.replace(path)
            log.info("Classifier judge stored in %s (weights SHA-1 %s).", path, judge.sha1)
        return judge

    def features_and_predictions(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate activations (N, features) and predicted labels (N,), in fixed-size chunks (one compiled shape)."""
        images = np.asarray(images, np.float32)
        n, size = len(images), min(self.batch_size, max(len(images), 1))
        feats, preds = [], []
        for start in range(0, n, size):
            chunk = images[start : start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)]) if len(chunk) < size else chunk
            h, logits = self._forward(padded)
            feats.append(np.asarray(h, np.float64)[: len(chunk)])
            preds.append(np.asarray(jnp.argmax(logits, -1))[: len(chunk)])
        return np.concatenate(feats), np.concatenate(preds).astype(np.int32)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.features_and_predictions(images)[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.features_and_predictions(images)[1]

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of feature rows."""
    features = np.asarray(features, np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows."""
    return frechet_distance(*statistics(a), *statistics(b))
