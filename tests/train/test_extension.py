"""The contracts are enough: an objective and a domain written here, each one class plus one config
node, train and evaluate through the command line with no edit to the core."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra.core.config_store import ConfigStore

from shortcutlib.config import ComponentConfig
from shortcutlib.domain import Batch, DomainConfig, IdentityCodec, SampleFn
from shortcutlib.nn.factory import build_backbone
from shortcutlib.objectives.base import Objective, Targets
from shortcutlib.objectives.common import interpolate
from shortcutlib.run import main


@dataclass
class LateTimesConfig(ComponentConfig):
    power: float = 2.0  # t = u^(1/power): times crowd towards the data


class LateTimesFlowMatching(Objective):
    """Flow matching with times drawn towards the data end, queried at d = 0."""

    Config = LateTimesConfig

    def targets(self, key, batch, model, ema_model, **_: Any) -> Targets:
        x1 = batch["x"]
        k_t, k_noise = jax.random.split(key)
        t = jax.random.uniform(k_t, (x1.shape[0],)) ** (1.0 / self.config.power)
        x0 = jax.random.normal(k_noise, x1.shape)
        ones = jnp.ones_like(t)
        return Targets(interpolate(x0, x1, t), t, jnp.zeros_like(t), None, x1 - x0, ones)

    def query_sizes(self, num_steps: int) -> np.ndarray:
        return np.zeros(num_steps)


@dataclass
class CircleConfig(DomainConfig):
    name: str = "circle"
    radius: float = 2.0


class CircleDomain:
    """Points on a circle of ``radius``; evaluation reports the samples' mean radius per budget."""

    Config = CircleConfig
    num_classes = 0
    sample_shape = (2,)

    def __init__(self, config: CircleConfig):
        self.name, self.radius, self.codec = config.name, config.radius, IdentityCodec()

    def _points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        angle = rng.uniform(0, 2 * np.pi, n)
        return (self.radius * np.stack([np.cos(angle), np.sin(angle)], 1)).astype(np.float32)

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        i = start_batch
        while True:
            yield {"x": self._points(batch_size, np.random.default_rng([seed, i])), "cond": None}
            i += 1

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]:
        return self.train_data(batch_size, seed + 1)

    def make_backbone(self, model_config: Any, rngs: Any) -> Any:
        return build_backbone(model_config, data_shape=self.sample_shape, rngs=rngs)

    def sample_cond(self, num_samples: int, seed: int) -> None:
        return None

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        return {f"radius@{n}": float(np.linalg.norm(np.asarray(sample_fn(jax.random.key(0), n, 256)), axis=1).mean()) for n in steps}

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]:
        return []

    def state(self) -> dict[str, Any]:
        return {"radius": self.radius}

    def load_state(self, state: dict[str, Any]) -> None:
        self.radius = state.get("radius", self.radius)


@pytest.fixture(scope="module", autouse=True)
def config_nodes():
    store = ConfigStore.instance()
    store.store(group="objective", name="late_times", node={"_target_": f"{__name__}.LateTimesFlowMatching", "power": 3.0})
    store.store(group="domain", name="circle", node={"_target_": f"{__name__}.CircleDomain", "name": "circle"})


def test_new_objective_and_domain_train_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["domain=circle", "objective=late_times", "model=mlp", "model.hidden=32", "model.depth=1", "domain.radius=1.5",
                 "train.steps=60", "train.batch_size=64", "train.lr=3e-3", "train.log_every=20", "eval.steps=[1,8]",
                 "logging.progress=false", f"out_dir={out}"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [20, 40, 60]
    evaluation = next(r for r in rows if r["kind"] == "eval")
    assert set(evaluation) >= {"radius@1", "radius@8"} and np.isfinite(evaluation["radius@8"])
    saved = (out / "config.yaml").read_text()
    assert f"_target_: {__name__}.LateTimesFlowMatching" in saved and "power: 3.0" in saved and "radius: 1.5" in saved
    # The checkpoint alone rebuilds both: re-evaluation gives the same numbers.
    assert main(["mode=eval", f"ckpt={out}", "eval.steps=[1,8]", "logging.progress=false"]) == 0
    again = json.loads((out / "eval_step60" / "metrics.jsonl").read_text().splitlines()[0])
    assert again["radius@8"] == pytest.approx(evaluation["radius@8"], rel=1e-6)
