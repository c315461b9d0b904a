"""Entry point: ``python -m shortcutlib.run [domain=...] [model=...] [objective=...] [key=value ...]``.

Every run directory gets ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``loss.png`` and
``samples/``. ``mode=eval ckpt=<run dir or checkpoints dir>`` re-evaluates a checkpoint from it
alone; ``--cfg job`` prints the validated configuration and exits. Bad input stops before any
work with one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import jax

from shortcutlib.checkpoint import Checkpointer, read_meta
from shortcutlib.config import ConfigError, RunConfig, compose_config, instantiate, resolve, to_yaml
from shortcutlib.domain import Domain
from shortcutlib.inference import make_sample_fn
from shortcutlib.parallel import initialize_distributed
from shortcutlib.train.logging import MetricsLogger, plot_loss
from shortcutlib.train.loop import NonFiniteLossError, Run, build_run
from shortcutlib.train.phases import plan_phases, run_phases

log = logging.getLogger("shortcutlib")

USAGE = """usage: python -m shortcutlib.run [group=option ...] [key=value ...] [--cfg job]

  groups: domain, model, objective, experiment, task (robot presets); see configs/
  python -m shortcutlib.run domain=toy2d objective=flow_matching train.steps=2000
  python -m shortcutlib.run mode=eval ckpt=runs/digits/<date>
  python -m shortcutlib.run --cfg job        # print the validated configuration"""

# Bad input the user can fix: printed as one line, exit status 2.
USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, NonFiniteLossError, ImportError, KeyError)


def build_domain(config: RunConfig) -> Domain:
    """The configured domain: the one place the core turns a config into one (``_target_``)."""
    return instantiate(config.domain)


def evaluate_and_visualize(config: RunConfig, domain: Domain, run: Run, params: Any, run_dir: Path, step: int) -> dict[str, float]:
    """Evaluate at every budget in ``eval.steps`` and write pictures for ``eval.visualize_steps``."""
    sample_fn = make_sample_fn(
        run.graphdef, params, run.objective, tuple(domain.sample_shape), cfg_scale=config.sample.cfg_scale, num_classes=domain.num_classes
    )
    samples_dir = run_dir / "samples"
    metrics: dict[str, float] = {}
    lead = jax.process_index() == 0  # every process samples; one writes
    if config.mode in ("train", "eval") and config.eval.enabled:
        metrics = domain.evaluate(sample_fn, list(config.eval.steps), samples_dir)
        MetricsLogger(run_dir, enabled=lead).log(step, metrics, kind="eval")
        log.info("Evaluation at step %d: %s", step, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    if lead:
        domain.visualize(sample_fn, list(config.eval.visualize_steps), samples_dir)
    return metrics


def checkpoint_dir(path: str) -> Path:
    p = Path(path).expanduser()
    for candidate in (p, p / "checkpoints", p.parent):
        if candidate.is_dir() and any(c.name.isdigit() for c in candidate.iterdir()):
            return candidate
    raise ConfigError(f"ckpt={path}: no checkpoints there; give a run directory or its checkpoints/ folder.")


def restore_run(config: RunConfig) -> tuple[RunConfig, Domain, Run, Any, int, Path]:
    """Rebuild a run from a checkpoint's own config; only mode, eval, sample and logging come from the command line."""
    if not config.ckpt:
        raise ConfigError(f"mode={config.mode} needs ckpt=<run dir or checkpoints dir>.")
    ckpt_dir = checkpoint_dir(config.ckpt)
    meta, step = read_meta(ckpt_dir)
    try:
        saved = resolve(meta["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ConfigError(f"the checkpoint in {ckpt_dir} was written by an incompatible version of shortcutlib ({exc}).") from None
    merged = dataclasses.replace(saved, mode=config.mode, ckpt=config.ckpt, eval=config.eval, sample=config.sample, logging=config.logging)
    domain = build_domain(merged)
    run = build_run(merged, domain, plan_phases(merged, domain)[-1].objective)
    state, meta, step = Checkpointer(ckpt_dir, async_save=False).restore(run.state, step)
    domain.load_state(meta.get("domain") or {})
    return merged, domain, run, state, step, ckpt_dir.parent


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
        evaluate_and_visualize(config, domain, result.run, params, run_dir, int(result.state.step))
        log.info("Run directory: %s", run_dir)
        return 0
    config, domain, run, state, step, source_dir = restore_run(config)
    out = source_dir / f"{config.mode}_step{step}"
    out.mkdir(parents=True, exist_ok=True)
    evaluate_and_visualize(config, domain, run, state.ema_params if config.eval.ema else state.params, out, step)
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
