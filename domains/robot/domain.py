"""``RobotDomain``: shortcut models as Diffusion-Policy-style action-chunk policies.

Data space is raw action chunks (H, A); the codec is the min/max action normaliser, so model
space is [-1, 1] per action dimension. The condition is the observation history (To,
obs_dim), normalised by the domain itself (the core never sees raw observations). Both
normalisers are fitted on the training split and travel with the checkpoint through
``state()``/``load_state()``. Task presets (windows, demonstration counts, training steps) are
the ``task`` config group: ``python -m shortcutlib.run domain=robot task=cube_single``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from flax import nnx

from domains.robot.chunking import window_indices
from domains.robot.datasets import Episodes, read_d4rl_hdf5, read_minari, read_ogbench_npz, split_episodes
from domains.robot.normalize import Normalizer
from shortcutlib.config import require, require_choice
from shortcutlib.domain import Batch, DomainConfig, SampleFn, infinite_batches

log = logging.getLogger(__name__)

SOURCES = ("local", "minari", "hdf5", "ogbench_npz")
MANIFEST = "dataset.json"

# evaluate_policy's metrics, renamed for the ``name@steps`` keys.
ROLLOUT_METRICS = {
    "success_rate": "success",
    "mean_return": "return",
    "mean_length": "length",
    "policy_latency_ms": "latency_ms",
}

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class RolloutConfig:
    """Closed-loop evaluation at every budget of ``eval.steps``."""

    num_episodes: int = 50
    num_envs: int = 10  # environments stepped in lockstep, one policy call for all
    seed: int = 0  # rollouts draw reset seeds from another stream than collection
    sample_seed: int = 0
    noise_scale: float = 1.0  # initial noise x0 times this: 1 samples the learned policy, 0 is deterministic
    clip_actions: bool = True  # clip model-space samples to [-1, 1] before decoding (minmax actions)
    video: bool = False  # first episode of the 1-step policy -> <samples>/videos/<task>_1step.<format>
    video_format: str = "gif"  # gif | mp4 (mp4 needs imageio-ffmpeg)

    def __post_init__(self) -> None:
        require(self.num_episodes >= 1, "rollout.num_episodes", self.num_episodes, "must be at least 1.")
        require(self.num_envs >= 1, "rollout.num_envs", self.num_envs, "must be at least 1.")
        require(self.noise_scale >= 0, "rollout.noise_scale", self.noise_scale, "must be >= 0; 1 samples, 0 is deterministic.")
        require_choice("rollout.video_format", self.video_format, ("gif", "mp4"))


@dataclass
class VisualizeConfig:
    num_obs: int = 4  # validation observations shown
    num_samples: int = 8  # sampled chunks per observation


@dataclass
class RobotConfig(DomainConfig):
    name: str = "robot"
    task: str = "reacher"  # see domains.robot.tasks.TASKS; presets: the task config group
    # Where the demonstrations come from.
    source: str = "local"  # local | minari | hdf5 | ogbench_npz
    path: Optional[str] = None  # hdf5/ogbench_npz: the file; minari: the datasets root (else $MINARI_DATASETS_PATH)
    dataset_id: Optional[str] = None  # minari: dataset id, e.g. D4RL/pointmaze/large-v2
    obs_keys: Optional[list[str]] = None  # dict observations: keys concatenated in order (null: observation, desired_goal)
    extra_obs: list[str] = field(default_factory=list)  # hdf5: datasets appended to observations, e.g. [infos/goal]
    data_dir: str = "~/.cache/shortcutlib/robot"  # source=local: collected here once, then reused
    num_demos: Optional[int] = None  # local: episodes to collect (null: 100); others: the first n (null: all)
    collect_seed: int = 0
    action_noise: float = 0.0  # local: std of noise added to the executed expert actions, the recorded ones
    # stay the expert's (DART): demonstrations then show recoveries
    expert: dict[str, Any] = field(default_factory=dict)  # local: keyword arguments for the task's expert
    # Windows: observation history To, chunk H predicted, the first action_horizon executed.
    obs_horizon: int = 2
    horizon: int = 16
    action_horizon: int = 4
    val_fraction: float = 0.1  # whole episodes held out (sample_cond, eval_data, visualize)
    split_seed: int = 0
    obs_norm: str = "meanstd"  # meanstd | minmax | identity, fitted on the training split
    action_norm: str = "meanstd"  # meanstd | minmax; meanstd gives model space unit variance (expert actions are
    # mostly tiny, so minmax would leave them a small fraction of the noise scale)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    visualize: VisualizeConfig = field(default_factory=VisualizeConfig)

    def __post_init__(self) -> None:
        require_choice("source", self.source, SOURCES)
        require_choice("obs_norm", self.obs_norm, ("meanstd", "minmax", "identity"))
        require_choice("action_norm", self.action_norm, ("meanstd", "minmax"))
        require(self.obs_horizon >= 1, "obs_horizon", self.obs_horizon, "must be at least 1.")
        require(1 <= self.action_horizon <= self.horizon, "action_horizon", self.action_horizon, f"must be in [1, horizon={self.horizon}].")
        require(self.num_demos is None or self.num_demos >= 1, "num_demos", self.num_demos, "must be at least 1 (null: all).")
        require(self.action_noise >= 0, "action_noise", self.action_noise, "must be >= 0.")

    @property
    def demos_to_collect(self) -> int:
        return 100 if self.num_demos is None else self.num_demos


# --- where the episodes come from ----------------------------------------------------------
def _local_cache_dir(cfg: RobotConfig) -> Path:
    tag = "".join(f"-{k}={v}" for k, v in sorted(cfg.expert.items()))
    if cfg.action_noise > 0:
        tag += f"-noise={cfg.action_noise:g}"
    return Path(cfg.data_dir).expanduser() / f"{cfg.task}-n{cfg.demos_to_collect}-s{cfg.collect_seed}{tag}"


def _relative(value: Any, folder: Path) -> Any:
    """Paths inside ``folder`` as relative strings, so the manifest survives renaming it."""
    if not isinstance(value, os.PathLike):
        return value
    try:
        return str(Path(value).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(value)


def collect_local(cfg: RobotConfig) -> Path:
    """Collect expert demonstrations once into the cache folder; returns the HDF5 file.

    Collection writes into a temporary sibling folder that is renamed when complete, so an
    interrupted run never leaves a half-written dataset behind to be reused.
    """
    folder = _local_cache_dir(cfg)
    manifest = folder / MANIFEST
    if manifest.is_file():
        return folder / json.loads(manifest.read_text())["hdf5"]
    from domains.robot.collect import collect

    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("Collecting %d %s demonstrations into %s (once; later runs reuse them).", cfg.demos_to_collect, cfg.task, folder)
    result = collect(cfg.task, cfg.demos_to_collect, tmp, seed=cfg.collect_seed, action_noise=cfg.action_noise, **cfg.expert)
    info = {k: _relative(v, tmp) for k, v in dict(result).items()}
    manifest_data = {"hdf5": _relative(Path(result["hdf5"]), tmp), "collect": info}
    (tmp / MANIFEST).write_text(json.dumps(manifest_data, indent=1, default=str))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / json.loads(manifest.read_text())["hdf5"]


def load_episodes(cfg: RobotConfig) -> Episodes:
    """The episodes ``cfg.source`` names (collecting them first for ``source=local``)."""
    obs_keys, limit = cfg.obs_keys, cfg.num_demos
    if cfg.source == "local":
        return read_d4rl_hdf5(collect_local(cfg), obs_keys=obs_keys, max_episodes=cfg.demos_to_collect)
    if cfg.source == "minari":
        if not cfg.dataset_id:
            raise ValueError(f"source=minari needs domain.dataset_id (the task preset for {cfg.task!r} names none).")
        return read_minari(cfg.dataset_id, cfg.path, obs_keys=obs_keys, max_episodes=limit)
    if cfg.path is None:
        raise ValueError(f"source={cfg.source} needs domain.path, the dataset file.")
    if cfg.source == "hdf5":
        return read_d4rl_hdf5(cfg.path, obs_keys=obs_keys, extra_obs=cfg.extra_obs, max_episodes=limit)
    return read_ogbench_npz(cfg.path, max_episodes=limit)


# --- the domain ----------------------------------------------------------------------------
class RobotDomain:
    """Observation history -> action chunk, from offline or locally collected demonstrations."""

    Config = RobotConfig
    requires = ("gymnasium", "mujoco", "gymnasium_robotics", "ogbench", "h5py")  # the robot extra
    num_classes = 0

    def __init__(self, config: RobotConfig | None = None, episodes: Episodes | None = None):
        self.cfg = config or RobotConfig()
        self.name = self.cfg.name
        self.task = self.cfg.task
        self.obs_horizon = self.cfg.obs_horizon
        self.horizon = self.cfg.horizon
        self.action_horizon = self.cfg.action_horizon
        episodes = episodes if episodes is not None else load_episodes(self.cfg)
        self.train_episodes, self.val_episodes = split_episodes(episodes, self.cfg.val_fraction, self.cfg.split_seed)
        self.obs_dim = episodes.obs_dim
        self.action_dim = episodes.action_dim
        self.sample_shape = (self.horizon, self.action_dim)
        self.obs_normalizer = Normalizer.fit(self.train_episodes.observations, self.cfg.obs_norm)
        self.action_normalizer = Normalizer.fit(self.train_episodes.actions, self.cfg.action_norm)
        self._train_idx = window_indices(self.train_episodes, self.obs_horizon, self.horizon)
        # Without a validation split (val_fraction=0) the held-out views fall back to training data.
        self._held_out = self.val_episodes if self.val_episodes is not None else self.train_episodes
        self._val_idx = window_indices(self._held_out, self.obs_horizon, self.horizon)
        log.info(
            "Robot data: %d train / %d validation episodes, %d training windows.",
            self.train_episodes.num_episodes,
            0 if self.val_episodes is None else self.val_episodes.num_episodes,
            len(self._train_idx[0]),
        )

    # --- codec and persistent state ----------------------------------------------------------
    @property
    def codec(self) -> Normalizer:
        return self.action_normalizer

    def state(self) -> dict[str, Any]:
        """JSON-serialisable normalisers and shapes, saved with the checkpoint."""
        return {
            "task": self.task,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "obs_horizon": self.obs_horizon,
            "horizon": self.horizon,
            "obs_normalizer": self.obs_normalizer.to_dict(),
            "action_normalizer": self.action_normalizer.to_dict(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Use a checkpoint's normalisers, so evaluation maps exactly as training did."""
        for key in ("obs_dim", "action_dim", "obs_horizon", "horizon"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"the checkpoint has {key}={state[key]} but this domain has {getattr(self, key)}; "
                    "use the domain settings (task, horizons) the checkpoint was trained with."
                )
        self.obs_normalizer = Normalizer.from_dict(state["obs_normalizer"])
        self.action_normalizer = Normalizer.from_dict(state["action_normalizer"])

    # --- data --------------------------------------------------------------------------------
    def _windows(self, episodes: Episodes, idx: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> Batch:
        obs_idx, act_idx = idx
        obs = self.obs_normalizer.encode(episodes.observations[obs_idx[rows]])
        return {"x": episodes.actions[act_idx[rows]], "cond": obs.astype(np.float32)}

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        """Endless shuffled batches: raw chunks ``x`` (B, H, A), normalised histories ``cond`` (B, To, obs_dim).

        ``start_batch`` skips that many batches, so a resumed run sees the same stream.
        """
        rows = infinite_batches({"row": np.arange(len(self._train_idx[0]))}, batch_size, seed)
        for batch in itertools.islice(rows, start_batch, None):
            yield self._windows(self.train_episodes, self._train_idx, batch["row"])

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """One shuffled pass over the validation windows in full batches (one smaller batch if they are fewer)."""
        n = len(self._val_idx[0])
        order = np.random.default_rng(seed).permutation(n)
        for start in range(0, max(n - batch_size, 0) + 1, batch_size):
            yield self._windows(self._held_out, self._val_idx, order[start : start + batch_size])

    def sample_cond(self, num_samples: int, seed: int) -> np.ndarray:
        """Normalised observation histories (num_samples, To, obs_dim) of validation windows."""
        n = len(self._val_idx[0])
        rows = np.random.default_rng(seed).choice(n, num_samples, replace=num_samples > n)
        return self._windows(self._held_out, self._val_idx, rows)["cond"]

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module:
        from shortcutlib.nn.factory import build_backbone

        return build_backbone(
            model_config,
            data_shape=self.sample_shape,
            num_classes=0,
            obs_dim=self.obs_dim,
            obs_horizon=self.obs_horizon,
            rngs=rngs,
        )

    # --- policies and evaluation -----------------------------------------------------------
    def make_policy(self, sample_fn: SampleFn, num_steps: int, seed: int = 0, noise_scale: float = 1.0) -> Policy:
        """Raw observation history (N, To, obs_dim) -> raw action chunk (N, H, A), fresh noise per call.

        ``noise_scale`` multiplies the initial noise x0 (a sampling temperature): 1 samples the
        learned distribution; 0 starts every chunk from the noise mean, a deterministic policy.
        """
        if noise_scale < 0:
            raise ValueError(f"rollout.noise_scale must be >= 0 (got {noise_scale}); 1 samples, 0 is deterministic.")
        base = jax.random.key(seed)
        calls = itertools.count()
        clip = self.cfg.rollout.clip_actions and self.action_normalizer.mode == "minmax"
        scale = {} if noise_scale == 1.0 else {"noise_scale": noise_scale}  # plain sampling keeps the plain call

        def policy(obs_history: np.ndarray) -> np.ndarray:
            obs = np.asarray(obs_history, np.float32)
            cond = self.obs_normalizer.encode(obs).astype(np.float32)
            z = np.asarray(sample_fn(jax.random.fold_in(base, next(calls)), num_steps, num_samples=len(obs), cond=cond, **scale))
            if clip:
                z = np.clip(z, -1.0, 1.0)
            return self.codec.decode(z).astype(np.float32)

        return policy

    def evaluate(
        self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path, noise_scale: float | None = None
    ) -> dict[str, float]:
        """Roll out the policy for each step budget: ``success@n``, ``return@n``, ``length@n``, ``latency_ms@n``.

        ``noise_scale`` (default ``rollout.noise_scale``) scales the initial noise, see ``make_policy``.
        With ``rollout.video`` the first episode of the 1-step policy is written to
        ``out_dir/videos/<task>_1step.<rollout.video_format>``.
        """
        from domains.robot.rollout import evaluate_policy

        ecfg = self.cfg.rollout
        scale = ecfg.noise_scale if noise_scale is None else float(noise_scale)
        metrics: dict[str, float] = {}
        for n in steps:
            video = None
            if ecfg.video and int(n) == 1:
                video = Path(out_dir) / "videos" / f"{self.task}_1step.{ecfg.video_format}"
            result = evaluate_policy(
                self.task,
                self.make_policy(sample_fn, int(n), seed=ecfg.sample_seed, noise_scale=scale),
                ecfg.num_episodes,
                obs_horizon=self.obs_horizon,
                action_horizon=self.action_horizon,
                seed=ecfg.seed,
                num_envs=ecfg.num_envs,
                record_video=video,
            )
            metrics.update({f"{short}@{n}": float(result[name]) for name, short in ROLLOUT_METRICS.items()})
        return metrics

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]:
        """Predicted vs demonstrated chunks for a few validation observations, one row each."""
        vcfg = self.cfg.visualize
        n_obs, n_samples = vcfg.num_obs, vcfg.num_samples
        # Spread over episodes and over time inside them (early steps are where modes split).
        eps = self._held_out
        k = np.arange(n_obs)
        ep = k % eps.num_episodes
        rows = eps.starts[ep] + (k * eps.lengths[ep]) // n_obs
        batch = self._windows(self._held_out, self._val_idx, rows)
        cond = np.repeat(batch["cond"], n_samples, axis=0)
        predicted = {}
        for n in steps:
            z = np.asarray(sample_fn(jax.random.key(int(n)), int(n), num_samples=len(cond), cond=cond))
            predicted[int(n)] = self.codec.decode(z).reshape(n_obs, n_samples, *self.sample_shape)
        path = Path(out_dir) / "action_chunks.png"
        plot_chunks(batch["x"], predicted, path, title=f"{self.task}: demonstrated (black) vs sampled chunks")
        return [path]


def plot_chunks(demo: np.ndarray, predicted: Mapping[int, np.ndarray], path: Path, title: str = "") -> None:
    """Grid: one row per observation, one column per step budget; every action dimension
    over the chunk, the demonstration thick and black, the samples thin in that dimension's colour.

    ``demo`` (R, H, A); ``predicted[n]`` (R, S, H, A).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(predicted)
    rows, horizon, action_dim = demo.shape
    fig, axes = plt.subplots(
        rows, len(budgets), figsize=(3.2 * len(budgets), 2.4 * rows), squeeze=False, sharex=True, sharey="row"
    )
    t = np.arange(horizon)
    colors = plt.get_cmap("tab10")
    for r in range(rows):
        for c, n in enumerate(budgets):
            ax = axes[r, c]
            for a in range(action_dim):
                ax.plot(t, predicted[n][r, :, :, a].T, color=colors(a % 10), alpha=0.35, lw=0.8)
                ax.plot(t, demo[r, :, a], color="black", lw=2.0, ls=("-", "--", ":", "-.")[a % 4])
            if r == 0:
                ax.set_title(f"{n} step{'s' if n > 1 else ''}")
            if r == rows - 1:
                ax.set_xlabel("chunk step")
        axes[r, 0].set_ylabel(f"val obs {r}\naction")
    handles = [plt.Line2D([], [], color=colors(a % 10), label=f"action {a}") for a in range(action_dim)]
    axes[0, -1].legend(handles=handles, fontsize="small", loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
