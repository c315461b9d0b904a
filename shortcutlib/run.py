"""Entry point: ``python -m shortcutlib.run [domain=...] [model=...] [objective=...] [mode=train|eval|sample]``.

Every run directory gets ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``samples/``.
``mode=eval ckpt=<run dir or checkpoints dir>`` re-evaluates a checkpoint from it alone.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from domains import build_domain
from shortcutlib.checkpoint import Checkpointer, read_meta
from shortcutlib.inference import make_sample_fn
from shortcutlib.parallel import ParallelConfig, initialize_distributed
from shortcutlib.train.logging import MetricsLogger, plot_loss
from shortcutlib.train.loop import NonFiniteLossError, Run, build_run, restore_domain_state, train
from shortcutlib.train.phases import is_multi_phase, run_phases

log = logging.getLogger("shortcutlib")

MODES = ("train", "eval", "sample")
CONFIG_GROUPS = ("domain", "model", "objective", "experiment")


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit status 2."""


def evaluate_and_visualize(cfg: DictConfig, domain: Any, run: Run, params: Any, run_dir: Path, step: int) -> dict[str, float]:
    """Evaluate EMA weights at every budget in ``eval.steps`` and write pictures for ``eval.visualize_steps``."""
    sample_fn = make_sample_fn(
        run.graphdef,
        params,
        run.objective,
        tuple(domain.sample_shape),
        cfg_scale=float(cfg.sample.cfg_scale),
        num_classes=domain.num_classes,
    )
    samples_dir = run_dir / "samples"
    metrics: dict[str, float] = {}
    lead = jax.process_index() == 0  # every process samples; one writes
    if cfg.mode in ("train", "eval") and cfg.eval.enabled:
        metrics = domain.evaluate(sample_fn, list(cfg.eval.steps), samples_dir)
        MetricsLogger(run_dir, enabled=lead).log(step, metrics, kind="eval")
        log.info("Evaluation at step %d: %s", step, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    if lead:
        domain.visualize(sample_fn, list(cfg.eval.visualize_steps), samples_dir)
    return metrics


def checkpoint_dir(path: str) -> Path:
    p = Path(path).expanduser()
    for candidate in (p, p / "checkpoints", p.parent):
        if candidate.is_dir() and any(c.name.isdigit() for c in candidate.iterdir()):
            return candidate
    raise UsageError(f"No checkpoints found at ckpt={path}: give a run directory or its checkpoints/ folder.")


def restore_run(cfg: DictConfig) -> tuple[DictConfig, Any, Run, Any, int, Path]:
    """Rebuild a run from a checkpoint's own config; only eval/sample options come from the command line."""
    if not cfg.ckpt:
        raise UsageError(f"mode={cfg.mode} needs ckpt=<run dir or checkpoints dir>.")
    ckpt_dir = checkpoint_dir(cfg.ckpt)
    meta, step = read_meta(ckpt_dir)
    saved = OmegaConf.create(meta["config"])
    overrides = {"mode": cfg.mode, "ckpt": cfg.ckpt, "eval": cfg.eval, "sample": cfg.sample, "logging": cfg.logging}
    merged = OmegaConf.merge(saved, overrides)
    domain = build_domain(merged.domain)
    run = build_run(merged, domain)
    state, meta, step = Checkpointer(ckpt_dir, async_save=False).restore(run.state, step)
    restore_domain_state(domain, meta.get("domain", {}))
    return merged, domain, run, state, step, ckpt_dir.parent


def main_impl(cfg: DictConfig, run_dir: Path) -> int:
    if cfg.mode not in MODES:
        raise UsageError(f"Unknown mode '{cfg.mode}'. Accepted: {', '.join(MODES)}.")
    # Multi-host start-up must precede anything that touches a device (a domain's codec may).
    initialize_distributed(ParallelConfig.from_cfg(cfg))
    lead = jax.process_index() == 0
    if cfg.mode == "train":
        domain = build_domain(cfg.domain)  # first: bad paths fail before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        if lead:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        # Methods with an objective.teacher block train the teacher first (run_dir/teacher), then the student here.
        result = run_phases(cfg, domain, run_dir).result if is_multi_phase(cfg) else train(cfg, domain, run_dir)
        if result.preempted:
            log.warning("Stopped at step %d; rerun with out_dir=%s to resume.", int(result.state.step), run_dir)
            return 0
        if lead:
            plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
        evaluate_and_visualize(cfg, domain, result.run, result.state.ema_params, run_dir, int(result.state.step))
        log.info("Run directory: %s", run_dir)
        return 0
    cfg, domain, run, state, step, source_dir = restore_run(cfg)
    out = source_dir / f"{cfg.mode}_step{step}"
    out.mkdir(parents=True, exist_ok=True)
    evaluate_and_visualize(cfg, domain, run, state.ema_params, out, step)
    log.info("Wrote %s", out)
    return 0


def check_group_choices(argv: list[str]) -> str | None:
    """One clear line for an unknown group choice (``domain=nope``), before Hydra's longer report."""
    import configs

    root = Path(configs.__file__).parent
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in CONFIG_GROUPS and value not in ("", "null"):
            choices = sorted(p.stem for p in (root / key).glob("*.yaml"))
            if value not in choices:
                return f"unknown {key} '{value}'. Accepted: {', '.join(choices)}."
    return None


@hydra.main(version_base=None, config_path="pkg://configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    for noisy in ("absl", "jax"):  # orbax logs every save step, jax its backend search, at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = main_impl(cfg, run_dir)
    except (UsageError, FileNotFoundError, ValueError, NonFiniteLossError, ImportError) as exc:
        print(f"shortcutlib: error: {exc}", file=sys.stderr)
        code = 2
    if code or cfg.mode != "train":
        # Hydra creates the run directory up front; drop it when this call left nothing in it.
        try:
            run_dir.rmdir()
        except OSError:
            pass
    if code:
        sys.exit(code)


if __name__ == "__main__":
    problem = check_group_choices(sys.argv[1:])
    if problem:
        print(f"shortcutlib: error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
