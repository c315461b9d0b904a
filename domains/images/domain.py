"""``domain=imagenet | celebahq | image_folder``: 256x256 images, trained in the latent space of a VAE.

Data space and model space:

- training from pixels (``latents_dir: null``): ``train_data`` yields ``x`` = images, float32
  NHWC in [-1, 1] (centre-cropped to ``image_size``, randomly flipped), and the codec is the
  VAE: ``encode`` gives scaled latents (posterior mean), ``decode`` images in [-1, 1];
- training from pre-encoded latents (``latents_dir`` set, see ``domains.images.latents``):
  ``x`` = scaled latents already, float32 ``latent_shape``; the codec's ``encode`` is then the
  identity and ``decode`` still runs the VAE decoder, for pictures and FID.

Either way the core does ``codec.encode(batch["x"])`` to train and ``codec.decode(samples)``
to see images. ``cond`` is int32 class labels (``num_classes`` is the null token) or None.
``batch_size`` arguments are host-local: with several processes each reads its own shard.

Reference statistics for FID (the paper uses the whole training set):

    python -m domains.images.ref_stats --source imagenet --data-dir D --weights W --out imagenet_train.npz
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from domains.images import grids
from domains.images.latents import LatentSource
from domains.images.preprocess import to_model_range, to_uint8
from domains.images.sources import (
    SOURCES,
    TFDS_DATASETS,
    DataMissingError,
    ImageSource,
    epoch_batches,
    folder_classes,
    folder_split_dir,
    image_batches,
    open_source,
    ordered_batches,
    process_shard,
)
from shortcutlib.config import require, require_choice
from shortcutlib.domain import Batch, DomainConfig, SampleFn

log = logging.getLogger(__name__)

# The classes of the DiT paper's sample figures (golden retriever, otter, lesser panda,
# geyser, macaw, valley, balloon, arctic fox).
IMAGENET_VIS_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)


@dataclass
class FidConfig:
    weights: Optional[str] = None  # pytorch-fid pt_inception-2015-12-05-6726825d.pth (or its .npz)
    ref_stats: Optional[str] = None  # .npz (mu, sigma): python -m domains.images.ref_stats ...
    num_samples: int = 50000  # FID-50k
    batch_size: int = 256  # samples drawn per sampler call
    inception_batch_size: int = 200
    seed: int = 0


@dataclass
class VisConfig:
    num_samples: int = 8  # columns of the per-budget grid and the class grids
    seed: int = 0
    classes: Optional[list[int]] = None  # null: the DiT paper's classes on ImageNet, else the first 8
    interpolation_points: int = 8


@dataclass
class ImageConfig(DomainConfig):
    name: str = "imagenet"
    source: str = "imagenet"  # imagenet | celebahq | image_folder
    data_dir: Optional[str] = None  # TFDS data_dir, or the image folder
    manual_dir: Optional[str] = None  # TFDS manual files (only named in the preparation hint)
    latents_dir: Optional[str] = None  # pre-encoded latents (python -m domains.images.encode_latents ...); null: encode on the fly
    eval_latents_dir: Optional[str] = None  # latents of the held-out split for eval_data (null: the training latents)
    vae_path: Optional[str] = None  # sd-vae-ft-mse folder: config.json + diffusion_pytorch_model.safetensors
    vae_batch_size: int = 32  # VAE encode/decode chunk (device memory)
    image_size: int = 256  # ADM centre crop
    latent_shape: list[int] = field(default_factory=lambda: [32, 32, 4])  # model space: image_size / 8, 4 channels
    num_classes: Optional[int] = None  # null: what the data have; 0 trains an unconditional model on labelled data
    cfg_scale: float = 1.0  # the guidance scale experiments pass to sampling and to the objective
    flip: bool = True  # random horizontal flips
    num_workers: int = 8  # image decoding threads per process
    fid: FidConfig = field(default_factory=FidConfig)
    vis: VisConfig = field(default_factory=VisConfig)

    def __post_init__(self) -> None:
        require_choice("source", self.source, SOURCES)
        require(len(self.latent_shape) == 3, "latent_shape", self.latent_shape, "must be [height, width, channels].")


class ImageCodec:
    """Images in [-1, 1] <-> scaled VAE latents; the VAE is loaded on first use.

    With ``pre_encoded`` the data are latents already and ``encode`` is the identity.
    """

    def __init__(self, vae_path: str | None, *, pre_encoded: bool, chunk_size: int | None = 32, vae: Any = None):
        self.vae_path = vae_path
        self.pre_encoded = pre_encoded
        self.chunk_size = chunk_size
        self._vae = vae
        self._codec: Any = None

    @property
    def vae_codec(self) -> Any:
        if self._codec is None:
            from domains.images.vae import VAECodec, load_vae

            if self._vae is None:
                if not self.vae_path:
                    raise FileNotFoundError(
                        "The image domain needs the sd-vae-ft-mse autoencoder: set domain.vae_path=<folder with "
                        "config.json and diffusion_pytorch_model.safetensors>."
                    )
                self._vae = load_vae(Path(self.vae_path).expanduser())
            self._codec = VAECodec(self._vae, chunk_size=self.chunk_size)
        return self._codec

    def encode(self, x: Any) -> Any:
        return x if self.pre_encoded else self.vae_codec.encode(x)

    def decode(self, z: Any) -> Any:
        return self.vae_codec.decode(z)


class ImageDomain:
    Config = ImageConfig

    def __init__(self, config: ImageConfig, *, vae: Any = None):
        self.config = config
        self.name = config.name
        self.source = config.source
        self.data_dir = config.data_dir
        self.manual_dir = config.manual_dir
        self.latents_dir = config.latents_dir
        self.eval_latents_dir = config.eval_latents_dir
        self.image_size = config.image_size
        self.sample_shape = tuple(int(s) for s in config.latent_shape)
        self.flip = config.flip
        self.num_workers = config.num_workers
        self.fid_cfg = config.fid
        self.vis_cfg = config.vis
        self.classes: list[str] | None = None
        self._features: Any = None  # FID Inception, loaded on first evaluation
        self._latent_sources: dict[str, LatentSource] = {}
        self.num_classes = self._resolve_num_classes(config.num_classes)
        self.codec = ImageCodec(config.vae_path, pre_encoded=bool(self.latents_dir), chunk_size=config.vae_batch_size, vae=vae)
        if not self.latents_dir:
            self._open("train")  # fail now, with instructions, if the data are missing
        for key in ("weights", "ref_stats"):
            if not getattr(self.fid_cfg, key):
                log.warning("domain.fid.%s is not set: evaluation (FID) will fail; visualisation works.", key)

    def _latent_source(self, directory: str) -> LatentSource:
        """Pre-encoded latents, opened on first use (evaluation needs none)."""
        if directory not in self._latent_sources:
            source = LatentSource(directory)
            if source.latent_shape != self.sample_shape:
                raise ValueError(f"Latents in {directory} have shape {source.latent_shape}, domain.latent_shape is {self.sample_shape}.")
            expected = getattr(self, "num_classes", 0)  # unset while num_classes is being resolved from these latents
            if expected and source.num_classes != expected:
                raise ValueError(f"Latents in {directory} have {source.num_classes} classes, domain.num_classes is {expected}.")
            self.classes = self.classes or source.meta.get("classes")
            self._latent_sources[directory] = source
        return self._latent_sources[directory]

    def _resolve_num_classes(self, configured: int | None) -> int:
        """The configured number (0: unconditional even on labelled data), else what the data have."""
        if configured is not None:
            return int(configured)
        if self.latents_dir:
            return self._latent_source(self.latents_dir).num_classes
        if self.source in TFDS_DATASETS:
            return TFDS_DATASETS[self.source].num_classes
        if self.data_dir is None:
            raise DataMissingError("domain.data_dir is not set: point it at the image folder.")
        self.classes = folder_classes(folder_split_dir(self.data_dir, "train"))
        return len(self.classes)

    # ------------------------------------------------------------------ data

    def _open(self, split: str) -> ImageSource:
        source = open_source(self.source, split, self.data_dir, manual_dir=self.manual_dir, classes=self.classes)
        if self.num_classes and source.num_classes > self.num_classes:
            raise ValueError(f"The data have {source.num_classes} classes, more than domain.num_classes={self.num_classes}.")
        self.classes = self.classes or getattr(source, "classes", None) or None
        return source

    def _pixel_batches(self, split: str, batch_size: int, seed: int, start_batch: int, flip: bool) -> Iterator[Batch]:
        source = self._open(split)
        indices = process_shard(len(source))
        stream = image_batches(
            source,
            epoch_batches(indices, batch_size, seed, start_batch),
            image_size=self.image_size,
            flip=flip,
            seed=seed,
            num_workers=self.num_workers,
        )
        for batch in stream:
            yield {"x": to_model_range(batch["images"]), "cond": batch["labels"] if self.num_classes else None}

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        """Host-local batches ``{"x", "cond"}`` over reshuffled epochs; resumes at ``start_batch``."""
        if self.latents_dir:
            return self._latent_source(self.latents_dir).batches(batch_size, seed, start_batch, conditional=self.num_classes > 0)
        return self._pixel_batches("train", batch_size, seed, start_batch, self.flip)

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """Held-out batches (CelebA-HQ has none: its train split). With latents: ``eval_latents_dir``, else the training latents."""
        if self.latents_dir:
            source = self._latent_source(self.eval_latents_dir or self.latents_dir)
            return source.batches(batch_size, seed, conditional=self.num_classes > 0)
        return self._pixel_batches("eval", batch_size, seed, 0, flip=False)

    def reference_images(self, split: str = "train", batch_size: int = 64, limit: int | None = None) -> Iterator[np.ndarray]:
        """One ordered pass of uint8 centre crops (no flips), for FID reference statistics."""
        source = self._open(split)
        indices = np.arange(len(source) if limit is None else min(limit, len(source)))
        for batch in image_batches(source, ordered_batches(indices, batch_size), image_size=self.image_size, num_workers=self.num_workers):
            yield batch["images"]

    # ------------------------------------------------------------------ model

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module:
        from shortcutlib.nn.factory import build_backbone

        return build_backbone(model_config, data_shape=self.sample_shape, num_classes=self.num_classes, rngs=rngs)

    def sample_cond(self, num_samples: int, seed: int) -> np.ndarray | None:
        """Uniformly random class labels (the ADM/DiT FID protocol), or None when unconditional."""
        if self.num_classes <= 0:
            return None
        return np.random.default_rng(seed).integers(0, self.num_classes, num_samples).astype(np.int32)

    def decode_to_uint8(self, z: Any) -> np.ndarray:
        return to_uint8(np.asarray(self.codec.decode(z)))

    def generate(self, sample_fn: SampleFn, num_steps: int, num_samples: int, batch_size: int, seed: int = 0) -> Iterator[np.ndarray]:
        """uint8 images in batches; batch ``i`` uses the same noise and labels at every budget.

        Every call draws a full batch (one compiled shape); the last one is truncated.
        """
        base = jax.random.key(seed)
        for i, start in enumerate(range(0, num_samples, batch_size)):
            cond = self.sample_cond(batch_size, seed=seed * 1_000_003 + i)
            z = sample_fn(jax.random.fold_in(base, i), num_steps, batch_size, cond)
            yield self.decode_to_uint8(z)[: num_samples - start]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        """FID-N (``fid.num_samples``) at every step budget against ``fid.ref_stats``; writes the FID-vs-steps plot."""
        from shortcutlib.metrics.fid import InceptionFeatures, compute_statistics, frechet_distance, load_statistics

        weights, ref_stats = self.fid_cfg.weights, self.fid_cfg.ref_stats
        if not weights or not Path(weights).expanduser().is_file():
            raise FileNotFoundError(
                f"FID needs the Inception weights: set domain.fid.weights (now {weights!r}) to pytorch-fid's "
                "pt_inception-2015-12-05-6726825d.pth or its .npz (python -m shortcutlib.cli.convert_inception "
                "...), or run with eval.enabled=false."
            )
        if not ref_stats or not Path(ref_stats).expanduser().is_file():
            raise FileNotFoundError(
                f"FID needs reference statistics: set domain.fid.ref_stats (now {ref_stats!r}); write them with "
                f"python -m domains.images.ref_stats --source {self.source} --data-dir <data_dir> "
                f"--weights {weights} --out <stats.npz>"
            )
        num, batch, seed = self.fid_cfg.num_samples, self.fid_cfg.batch_size, self.fid_cfg.seed
        mu_ref, sigma_ref = load_statistics(Path(ref_stats).expanduser())
        if self._features is None:  # loaded once, reused by later evaluations
            self._features = InceptionFeatures(str(Path(weights).expanduser()), batch_size=self.fid_cfg.inception_batch_size)
        features = self._features
        metrics: dict[str, float] = {}
        for n in steps:
            mu, sigma = compute_statistics(self.generate(sample_fn, int(n), num, batch, seed), features)
            metrics[f"fid@{int(n)}"] = frechet_distance(mu, sigma, mu_ref, sigma_ref)
            log.info("FID-%d at %d step(s): %.3f", num, n, metrics[f"fid@{int(n)}"])
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fid.json").write_text(json.dumps({"num_samples": num, **metrics}, indent=2))
        grids.fid_vs_steps_plot(metrics, out_dir / "fid_vs_steps.png")
        return metrics

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]:
        """Per step budget: a sample grid (one row per budget, the same noise in every row), class
        grids (the same noise in every class row, with the sampler's CFG), and a noise-interpolation
        strip (spherical interpolation between two noise draws).

        Everything shown at one budget comes from one sampler call (one compiled shape).
        """
        from shortcutlib.sampling import interpolation_noise

        out_dir = Path(out_dir)
        steps = sorted(int(n) for n in steps)
        k, num_interp, seed = self.vis_cfg.num_samples, self.vis_cfg.interpolation_points, self.vis_cfg.seed
        key = jax.random.key(seed)
        default_classes = IMAGENET_VIS_CLASSES if self.num_classes == 1000 else range(min(self.num_classes, 8))
        configured = self.vis_cfg.classes
        classes = [int(c) for c in (default_classes if configured is None else configured) if 0 <= int(c) < self.num_classes]

        grid_noise = jax.random.normal(jax.random.fold_in(key, 0), (k, *self.sample_shape))
        interp_noise = interpolation_noise(jax.random.fold_in(key, 1), self.sample_shape, num_interp)
        noise = jnp.concatenate([grid_noise] * (1 + len(classes)) + [interp_noise])
        cond = None
        if self.num_classes > 0:
            cond = np.concatenate([
                self.sample_cond(k, seed),
                np.repeat(np.asarray(classes, np.int32), k),
                np.full((num_interp,), classes[0] if classes else 0, np.int32),
            ])
        grid, interp, per_class = {}, {}, {}
        for n in steps:
            images = self.decode_to_uint8(sample_fn(key, n, len(noise), cond, noise=noise))
            grid[n], interp[n] = images[:k], images[len(images) - num_interp :]
            per_class[n] = {c: images[(i + 1) * k : (i + 2) * k] for i, c in enumerate(classes)}

        paths = [grids.budget_grid(grid, out_dir / "grid_budgets.png"), grids.budget_grid(interp, out_dir / "interpolation.png")]
        names = dict(enumerate(self.classes)) if self.classes else None
        for n in steps if classes else []:
            paths.append(grids.class_grid(per_class[n], out_dir / f"classes_{n}steps.png", names))
        return paths

    # ------------------------------------------------------------------ checkpoint state

    def state(self) -> dict[str, Any]:
        return {"classes": self.classes} if self.classes else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("classes"):
            self.classes = list(state["classes"])
