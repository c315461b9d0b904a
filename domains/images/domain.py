"""``domain=imagenet | celebahq | image_folder``: 256x256 images, trained in the latent space of a VAE;
``domain=fmnist``: 28x28 grey Fashion-MNIST (or MNIST), trained in pixel space.

Data space and model space (``space``):

- ``latent``, training from pixels (``latents_dir: null``): ``train_data`` yields ``x`` = images,
  float32 NHWC in [-1, 1] (centre-cropped to ``image_size``, randomly flipped), and the codec is
  the VAE: ``encode`` gives scaled latents (posterior mean), ``decode`` images in [-1, 1];
- ``latent``, training from pre-encoded latents (``latents_dir`` set, see ``domains.images.latents``):
  ``x`` = scaled latents already, float32 ``latent_shape``; the codec's ``encode`` is then the
  identity and ``decode`` still runs the VAE decoder, for pictures and FID;
- ``pixel``: ``x`` = the images, float32 (image_size, image_size, channels) in [-1, 1], and the
  codec is the identity; no VAE. ``fit: pad`` centres small images (28x28) on an
  ``image_size`` square of background (-1) instead of resizing them.

Either way the core does ``codec.encode(batch["x"])`` to train and ``codec.decode(samples)``
to see images. ``cond`` is int32 class labels (``num_classes`` is the null token) or None.
``batch_size`` arguments are host-local: with several processes each reads its own shard.

Reference statistics for FID (the paper uses the whole training set):

    python -m domains.images.ref_stats --source imagenet --data-dir D --weights W --out imagenet_train.npz

``evaluator: classifier`` replaces FID for small labelled datasets: a CNN judge trained once on
the training split (``shortcutlib.metrics.classifier_judge``, cached in ``cache_dir``) gives the
feature space of a Fréchet distance to the whole eval split, ``fd_<name>@n``; its predictions on
class-conditional samples give ``class_acc@n``; ``fd_<name>_floor`` is the same distance for as
many real training images as samples.
"""

from __future__ import annotations

import dataclasses
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
from domains.images.preprocess import FITS, to_model_range, to_uint8
from domains.images.sources import (
    IDX_DATASETS,
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
from domains.vector_eval import metric_vs_steps_plot
from shortcutlib.config import require, require_choice
from shortcutlib.domain import Batch, DomainConfig, IdentityCodec, SampleFn
from shortcutlib.metrics.classifier_judge import JudgeConfig

log = logging.getLogger(__name__)

# The classes of the DiT paper's sample figures (golden retriever, otter, lesser panda,
# geyser, macaw, valley, balloon, arctic fox).
IMAGENET_VIS_CLASSES = (207, 360, 387, 974, 88, 979, 417, 279)
SPACES = ("latent", "pixel")
EVALUATORS = ("fid", "classifier")


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
    zoom: int = 1  # nearest-neighbour upscaling of every picture, for small images


@dataclass
class ImageConfig(DomainConfig):
    name: str = "imagenet"
    source: str = "imagenet"  # imagenet | celebahq | image_folder | fashion_mnist | mnist
    data_dir: Optional[str] = None  # TFDS data_dir, the image folder, or the folder of the IDX files
    space: str = "latent"  # latent: the VAE's latent space (latent_shape) | pixel: the images themselves, no VAE
    channels: int = 3  # 3: RGB | 1: greyscale (pixel space only: the VAE takes RGB)
    fit: str = "crop"  # crop: ADM centre crop and resize to image_size | pad: centred on image_size x image_size background (-1), never resized
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
    evaluator: str = "fid"  # fid: Inception FID against fid.ref_stats | classifier: Fréchet distance in a classifier judge's features
    eval_samples: int = 2000  # evaluator=classifier: samples per budget (labels in equal proportions), and real images for the floor
    eval_batch_size: int = 500  # evaluator=classifier: samples drawn per sampler call
    eval_seed: int = 0  # evaluator=classifier: noise of the samples and the floor's subset of training images
    cache_dir: Optional[str] = "~/.cache/shortcutlib"  # the classifier judge is cached here (null: trained at every start)
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # evaluator=classifier: its architecture and training
    fid: FidConfig = field(default_factory=FidConfig)
    vis: VisConfig = field(default_factory=VisConfig)

    def __post_init__(self) -> None:
        require_choice("source", self.source, SOURCES)
        require_choice("space", self.space, SPACES)
        require_choice("channels", self.channels, (1, 3))
        require_choice("fit", self.fit, FITS)
        require_choice("evaluator", self.evaluator, EVALUATORS)
        require(len(self.latent_shape) == 3, "latent_shape", self.latent_shape, "must be [height, width, channels].")
        require(self.space == "pixel" or self.channels == 3, "channels", self.channels, "the VAE of space=latent takes RGB: use 3, or space=pixel.")
        require(self.space == "latent" or not self.latents_dir, "latents_dir", self.latents_dir, "pre-encoded latents need space=latent.")
        require(self.eval_samples >= 2, "eval_samples", self.eval_samples, "must be at least 2.")
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be at least 1.")
        require(self.vis.zoom >= 1, "vis.zoom", self.vis.zoom, "must be at least 1.")
        self.judge.check("judge.")


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

    def __init__(self, config: ImageConfig, *, vae: Any = None, check_data: bool = True):
        self.config = config
        self.name = config.name
        self.source = config.source
        self.data_dir = config.data_dir
        self.manual_dir = config.manual_dir
        self.latents_dir = config.latents_dir
        self.eval_latents_dir = config.eval_latents_dir
        self.image_size = config.image_size
        self.space = config.space
        self.channels = config.channels
        self.fit = config.fit
        if self.space == "pixel":
            self.sample_shape = (self.image_size, self.image_size, self.channels)
        else:
            self.sample_shape = tuple(int(s) for s in config.latent_shape)
        self.flip = config.flip
        self.num_workers = config.num_workers
        self.evaluator = config.evaluator
        self.eval_samples = config.eval_samples
        self.eval_batch_size = config.eval_batch_size
        self.eval_seed = config.eval_seed
        self.cache_dir = config.cache_dir
        self.judge_cfg = config.judge
        self.fid_cfg = config.fid
        self.vis_cfg = config.vis
        self.classes: list[str] | None = None
        self._features: Any = None  # FID Inception, loaded on first evaluation
        self._judged: Any = None  # the classifier judge and its reference, built on first evaluation
        self._sources: dict[str, ImageSource] = {}
        self._latent_sources: dict[str, LatentSource] = {}
        self.num_classes = self._resolve_num_classes(config.num_classes)
        if self.space == "pixel":
            self.codec: Any = IdentityCodec()
        else:
            self.codec = ImageCodec(config.vae_path, pre_encoded=bool(self.latents_dir), chunk_size=config.vae_batch_size, vae=vae)
        if check_data and not self.latents_dir:
            self._open("train")  # fail now, with instructions, if the data are missing
        if check_data and self.evaluator == "fid":
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
        if self.source in IDX_DATASETS:
            return IDX_DATASETS[self.source].num_classes
        if self.data_dir is None:
            raise DataMissingError("domain.data_dir is not set: point it at the image folder.")
        self.classes = folder_classes(folder_split_dir(self.data_dir, "train"))
        return len(self.classes)

    # ------------------------------------------------------------------ data

    def _open(self, split: str) -> ImageSource:
        """The split's source, opened once (IDX sources hold their images in memory)."""
        if split in self._sources:
            return self._sources[split]
        source = open_source(self.source, split, self.data_dir, manual_dir=self.manual_dir, classes=self.classes)
        if self.num_classes and source.num_classes > self.num_classes:
            raise ValueError(f"The data have {source.num_classes} classes, more than domain.num_classes={self.num_classes}.")
        self.classes = self.classes or getattr(source, "classes", None) or None
        self._sources[split] = source
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
            channels=self.channels,
            fit=self.fit,
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
        """One ordered pass of uint8 centre crops (or padded images; no flips), for reference statistics."""
        for batch in self._reference_batches(split, batch_size, limit):
            yield batch["images"]

    def _reference_batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        source = self._open(split)
        indices = np.arange(len(source) if limit is None else min(limit, len(source)))
        yield from image_batches(source, ordered_batches(indices, batch_size), image_size=self.image_size,
                                 num_workers=self.num_workers, channels=self.channels, fit=self.fit)

    def labelled_images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A whole split in memory, ordered: uint8 images (N, H, W, C) as the model sees them, and int32 labels."""
        batches = list(self._reference_batches(split, batch_size=1000))
        return np.concatenate([b["images"] for b in batches]), np.concatenate([b["labels"] for b in batches]).astype(np.int32)

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

    def generate(
        self, sample_fn: SampleFn, num_steps: int, num_samples: int, batch_size: int, seed: int = 0, labels: np.ndarray | None = None
    ) -> Iterator[np.ndarray]:
        """uint8 images in batches; batch ``i`` uses the same noise and labels at every budget.

        ``labels`` (num_samples,) fixes the classes drawn; otherwise they are :meth:`sample_cond`'s.
        Every call draws a full batch (one compiled shape); the last one is truncated. A request smaller
        than ``batch_size`` draws just that many: 2 samples never cost a batch of 500.
        """
        batch_size = min(batch_size, num_samples)
        base = jax.random.key(seed)
        for i, start in enumerate(range(0, num_samples, batch_size)):
            if labels is None or self.num_classes <= 0:
                cond = self.sample_cond(batch_size, seed=seed * 1_000_003 + i)
            else:
                cond = np.resize(np.asarray(labels[start : start + batch_size], np.int32), batch_size)  # the last batch filled by repetition
            z = sample_fn(jax.random.fold_in(base, i), num_steps, batch_size, cond)
            yield self.decode_to_uint8(z)[: num_samples - start]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        """The configured evaluator's metrics at every step budget (``fid@n``, or ``fd_<name>@n`` and ``class_acc@n``)."""
        if self.evaluator == "classifier":
            return self._classifier_evaluate(sample_fn, steps, out_dir)
        return self._fid_evaluate(sample_fn, steps, out_dir)

    def _fid_evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
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

    def _judge(self) -> Any:
        """The classifier judge, the eval split's feature statistics, the floor and the judge's eval accuracy; built once."""
        if self._judged is None:
            from shortcutlib.metrics.classifier_judge import ClassifierJudge, statistics
            from shortcutlib.metrics.frechet import frechet_distance

            train_images, train_labels = self.labelled_images("train")
            source = self._open("train")
            if source.num_classes <= 0:
                raise ValueError(f"domain.evaluator=classifier needs labelled data; source {self.source} has no labels: use evaluator=fid.")
            if self.eval_samples > len(train_images):
                raise ValueError(f"domain.eval_samples={self.eval_samples} exceeds the {len(train_images)} training images the floor draws from.")
            train_x = to_model_range(train_images)
            judge = ClassifierJudge.fit_or_load(train_x, train_labels, source.num_classes, self.judge_cfg, self.cache_dir)
            eval_images, eval_labels = self.labelled_images("eval")
            ref_features, ref_predictions = judge.features_and_predictions(to_model_range(eval_images))
            mu_ref, sigma_ref = statistics(ref_features)
            # The floor: as many real images as samples, against the same reference.
            subset = np.sort(np.random.default_rng(self.eval_seed).choice(len(train_x), self.eval_samples, replace=False))
            floor = frechet_distance(*statistics(judge.features(train_x[subset])), mu_ref, sigma_ref)
            self._judged = {
                "judge": judge,
                "mu_ref": mu_ref,
                "sigma_ref": sigma_ref,
                "floor": floor,
                "eval_accuracy": float(np.mean(ref_predictions == eval_labels)),
                "num_reference": len(eval_images),
            }
            log.info("Classifier judge %s: accuracy %.4f on the eval split (%d images).", judge.sha1, self._judged["eval_accuracy"], len(eval_images))
        return self._judged

    def _classifier_evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        """Per budget: ``eval_samples`` samples (labels 0, 1, ..., in equal proportions, when class-conditional);
        ``fd_<name>@n``, their Fréchet distance to the eval split in the judge's features, and ``class_acc@n``,
        the judge's accuracy on them against the labels they were drawn for; ``fd_<name>_floor``, the distance
        of ``eval_samples`` real training images. Writes ``fd.json`` (with the judge's weights SHA-1) and a plot."""
        from shortcutlib.metrics.classifier_judge import statistics
        from shortcutlib.metrics.frechet import frechet_distance

        judged = self._judge()
        judge, num = judged["judge"], self.eval_samples
        fd_key = f"fd_{self.name}"
        labels = np.arange(num, dtype=np.int32) % self.num_classes if self.num_classes > 0 else None
        metrics: dict[str, float] = {}
        for n in steps:
            images = np.concatenate(list(self.generate(sample_fn, int(n), num, self.eval_batch_size, self.eval_seed, labels=labels)))
            features, predictions = judge.features_and_predictions(to_model_range(images))
            metrics[f"{fd_key}@{int(n)}"] = frechet_distance(*statistics(features), judged["mu_ref"], judged["sigma_ref"])
            if labels is not None:
                metrics[f"class_acc@{int(n)}"] = float(np.mean(predictions == labels))
            log.info("Judge Fréchet distance (%d samples) at %d step(s): %.4f", num, n, metrics[f"{fd_key}@{int(n)}"])
        metrics[f"{fd_key}_floor"] = judged["floor"]
        log.info("Judge weights SHA-1 %s; floor (%d real training images): %.4f", judge.sha1, num, judged["floor"])
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            record = {
                "evaluator": "classifier",
                "judge_sha1": judge.sha1,
                "judge_cache_key": judge.key,
                "judge_eval_accuracy": judged["eval_accuracy"],
                "judge": dataclasses.asdict(self.judge_cfg),
                "num_samples": num,
                "num_reference": judged["num_reference"],
                **metrics,
            }
            (out_dir / "fd.json").write_text(json.dumps(record, indent=2))
            metric_vs_steps_plot(metrics, [fd_key], out_dir / "fd_vs_steps.png", "Fréchet distance (judge features)")
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
            images = grids.zoom(self.decode_to_uint8(sample_fn(key, n, len(noise), cond, noise=noise)), self.vis_cfg.zoom)
            grid[n], interp[n] = images[:k], images[len(images) - num_interp :]
            per_class[n] = {c: images[(i + 1) * k : (i + 2) * k] for i, c in enumerate(classes)}

        paths = [grids.budget_grid(grid, out_dir / "grid_budgets.png"), grids.budget_grid(interp, out_dir / "interpolation.png")]
        names = dict(enumerate(self.classes)) if self.classes else None
        for n in steps if classes else []:
            paths.append(grids.class_grid(per_class[n], out_dir / f"classes_{n}steps.png", names))
        return paths

    # ------------------------------------------------------------------ checkpoint state

    @classmethod
    def restore(cls, config: ImageConfig, state: dict[str, Any]) -> ImageDomain:
        """From a checkpoint's state, without the dataset (to sample from a trained model)."""
        if "num_classes" in state:
            config = dataclasses.replace(config, num_classes=int(state["num_classes"]))
        domain = cls(config, check_data=False)
        domain.load_state(state)
        return domain

    def output(self, z: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C): decoded by the VAE in latent space."""
        return self.decode_to_uint8(z)

    def state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, **({"classes": self.classes} if self.classes else {})}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("classes"):
            self.classes = list(state["classes"])
