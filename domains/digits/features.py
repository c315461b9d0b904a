"""A small digit classifier whose hidden layer is the feature space of the digits Fréchet distance.

Like FID's Inception features, but for 8x8 digits: an MLP trained once on the training split
(deterministic, cached on disk), features from its last hidden layer.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

from shortcutlib.metrics.distances import frechet_distance_from_samples

HIDDEN = (128, 64)


class DigitFeatures:
    def __init__(self, images: np.ndarray, labels: np.ndarray, cache_dir: str | Path | None = None):
        key = hashlib.sha1(images.tobytes() + labels.tobytes() + repr(HIDDEN).encode()).hexdigest()[:12]
        path = Path(cache_dir).expanduser() / f"digits_classifier_{key}.pkl" if cache_dir else None
        if path is not None and path.exists():
            self.clf = pickle.loads(path.read_bytes())
        else:
            from sklearn.neural_network import MLPClassifier

            self.clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=600, random_state=0)
            self.clf.fit(self._flat(images), labels)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(pickle.dumps(self.clf))
                tmp.replace(path)

    @staticmethod
    def _flat(images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float64).reshape(len(images), -1)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Activations of the last hidden layer (ReLU), the classifier's own forward pass."""
        h = self._flat(images)
        for w, b in zip(self.clf.coefs_[:-1], self.clf.intercepts_[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.clf.predict(self._flat(images))

    def frechet(self, a: np.ndarray, b: np.ndarray) -> float:
        return frechet_distance_from_samples(self.features(a), self.features(b))
