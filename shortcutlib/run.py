"""Entry point: ``python -m shortcutlib.run [domain=...] [model=...] [objective=...] [key=value ...]``.

Every run directory gets ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``loss.png`` and
``samples/``. ``mode=eval ckpt=<run dir or checkpoints dir>`` re-evaluates a checkpoint from it
alone and ``mode=sample`` writes ``sample.num`` samples per budget of ``sample.steps`` (through
``shortcutlib.load``); ``--cfg job`` prints the validated configuration and exits. Bad input stops before any
work with one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import jax
import numpy as np

from shortcutlib.api import Model, build_domain, load
from shortcutlib.config import ConfigError, RunConfig, compose_config, to_yaml
from shortcutlib.domain import Domain, SampleFn
from shortcutlib.inference import make_sample_fn
from shortcutlib.parallel import initialize_distributed
from shortcutlib.train.logging import MetricsLogger, plot_loss
from shortcutlib.train.loop import NonFiniteLossError
from shortcutlib.train.phases import run_phases

log = logging.getLogger("shortcutlib")

USAGE = """usage: python -m shortcutlib.run [group=option ...] [key=value ...] [--cfg job]

  groups: domain, model, objective, experiment, task (robot presets); see configs/
  python -m shortcutlib.run domain=toy2d objective=flow_matching train.steps=2000
  python -m shortcutlib.run mode=eval ckpt=runs/digits/<date>
  python -m shortcutlib.run --cfg job        # print the validated configuration"""

# Bad input the user can fix: printed as one line, exit status 2.
USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, NonFiniteLossError, ImportError, KeyError)


def evaluate_and_visualize(config: RunConfig, domain: Domain, sample_fn: SampleFn, run_dir: Path, step: int) -> dict[str, float]:
    """Evaluate at every budget in ``eval.steps`` and write pictures for ``eval.visualize_steps``."""
    samples_dir = run_dir / "samples"
    metrics: dict[str, float] = {}
    lead = jax.process_index() == 0  # every process samples; one writes
    if config.eval.enabled:
        metrics = domain.evaluate(sample_fn, list(config.eval.steps), samples_dir)
        MetricsLogger(run_dir, enabled=lead).log(step, metrics, kind="eval")
        log.info("Evaluation at step %d: %s", step, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    if lead:
        domain.visualize(sample_fn, list(config.eval.visualize_steps), samples_dir)
    return metrics


def write_samples(model: Model, out_dir: Path) -> Path:
    """``sample.num`` samples at every budget of ``sample.steps``, in data space, one .npz."""
    cfg = model.config.sample
    cond = model.domain.sample_cond(cfg.num, cfg.seed)
    arrays = {f"samples_{n}steps": model.sample(cfg.num, steps=n, cond=cond, seed=cfg.seed) for n in cfg.steps}
    if cond is not None:
        arrays["cond"] = np.asarray(cond)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "samples.npz"
    np.savez(path, **arrays)
    model.domain.visualize(model.sample_fn(), list(cfg.steps), out_dir)
    return path


def execute(config: RunConfig) -> int:
    # Multi-host start-up must precede anything that touches a device (a domain's codec may).
    initialize_distributed(config.parallel)
    lead = jax.process_index() == 0
    if config.mode == "train":
        domain = build_domain(config)  # first: bad paths fail before anything is written
        run_dir = Path(config.out_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if lead:
            (run_dir / "config.yaml").write_text(to_yaml(config))
        result = run_phases(config, domain, run_dir).result
        if result.preempted:
            log.warning("Stopped at step %d; rerun with out_dir=%s to resume.", int(result.state.step), run_dir)
            return 0
        if lead:
            plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
        params = result.state.ema_params if config.eval.ema else result.state.params
        sample_fn = make_sample_fn(
            result.run.graphdef, params, result.run.objective, tuple(domain.sample_shape), cfg_scale=config.sample.cfg_scale, num_classes=domain.num_classes
        )
        evaluate_and_visualize(config, domain, sample_fn, run_dir, int(result.state.step))
        log.info("Run directory: %s", run_dir)
        return 0
    if not config.ckpt:
        raise ConfigError(f"mode={config.mode} needs ckpt=<run dir or checkpoints dir>.")
    model = load(config.ckpt, overrides=config)
    out = model.run_dir / f"{config.mode}_step{model.step_count}"
    if config.mode == "sample":
        log.info("Wrote %s", write_samples(model, out))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    evaluate_and_visualize(model.config, model.domain, model.sample_fn(), out, model.step_count)
    log.info("Wrote %s", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(USAGE)
        return 0
    show = "--cfg" in args
    if show:
        at = args.index("--cfg")
        del args[at : at + 2]
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", force=True)
    for noisy in ("absl", "jax", "orbax"):  # orbax logs every save step, jax its backend search, at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = compose_config(args)
        if show:
            print(to_yaml(config), end="")
            return 0
        return execute(config)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) if not isinstance(exc, KeyError) else str(exc.args[0] if exc.args else exc)
        print(f"shortcutlib: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
