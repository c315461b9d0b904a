"""The run configuration: one typed schema per group, validated once, before any work.

Hydra composes the YAML files of ``configs/`` and the command line; ``resolve`` then turns the
result into a ``RunConfig`` of dataclasses, so code receives typed objects and every default
lives in exactly one place, the dataclass that declares it:

- ``train``, ``eval``, ``sample``, ``logging``, ``parallel``: the schemas below (and in
  ``shortcutlib.parallel``);
- ``domain``, ``model``, ``objective``: *components*. Their config file names the class that
  implements them with ``_target_: package.module.ClassName``, and that class's nested
  ``Config`` dataclass is the group's schema. Adding a domain or an objective is one module
  plus one config file; nothing else names it.

An unknown key, a value of the wrong type or an impossible value raises ``ConfigError`` with
one line naming the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from shortcutlib.parallel import ParallelConfig

CONFIG_ROOT = Path(importlib.util.find_spec("configs").origin).parent
MODES = ("train", "eval", "sample")
DEFAULT_BUDGETS = [1, 2, 4, 8, 16, 32, 64, 128]


class ConfigError(ValueError):
    """A configuration the run cannot use; the message is one line naming the key."""


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """Raise ``ConfigError("key=value: what")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value}: {what}")


def require_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    require(value in choices, key, value, f"accepted: {', '.join(map(str, choices))}.")


@dataclass
class ComponentConfig:
    """Base of every component's ``Config``: ``_target_`` is the implementing class's path."""

    _target_: str = ""


# ---------------------------------------------------------------------------- plain groups


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch over all devices and processes
    steps: int = 2000  # total, over every phase of multi-phase objectives
    lr: float = 1.0e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    ema_decay: float = 0.999
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0  # global-norm clipping; null: none
    class_dropout: float = 0.0  # share of class labels replaced by the null token (classifier-free guidance)
    log_every: int = 50
    ckpt_every: int = 1000  # 0: only at the end
    keep_checkpoints: int = 3
    on_nonfinite: str = "stop"  # stop: raise, naming the step and the last good checkpoint | skip: drop that update

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1.")
        require(self.steps >= 1, "steps", self.steps, "must be at least 1.")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be at least 0.")
        require(
            self.warmup_steps == 0 or self.steps > self.warmup_steps,
            "steps",
            self.steps,
            f"must be above train.warmup_steps={self.warmup_steps}; lower warmup_steps or raise steps.",
        )
        require(self.lr > 0, "lr", self.lr, "must be positive.")
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be in [0, 1).")
        require(0.0 <= self.class_dropout < 1.0, "class_dropout", self.class_dropout, "must be in [0, 1).")
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "must be positive, or null for none.")
        require(self.log_every >= 1, "log_every", self.log_every, "must be at least 1.")
        require(self.ckpt_every >= 0, "ckpt_every", self.ckpt_every, "must be at least 0 (0: only at the end).")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "must be at least 1.")
        require_choice("schedule", self.schedule, ("constant", "cosine"))
        require_choice("on_nonfinite", self.on_nonfinite, ("stop", "skip"))


def _budgets(key: str, values: Sequence[int]) -> None:
    require(all(int(v) >= 1 for v in values), key, list(values), "every step budget must be at least 1.")


@dataclass
class EvalConfig:
    enabled: bool = True
    steps: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))  # budgets evaluated (metrics)
    visualize_steps: list[int] = field(default_factory=lambda: [1, 4, 128])  # budgets drawn (pictures)
    ema: bool = True  # evaluate the EMA weights (else the live ones)

    def __post_init__(self) -> None:
        _budgets("steps", self.steps)
        _budgets("visualize_steps", self.visualize_steps)


@dataclass
class SampleConfig:
    cfg_scale: float = 1.0  # classifier-free guidance at sampling; 1: none
    num: int = 64  # mode=sample: samples written per budget
    steps: list[int] = field(default_factory=lambda: [1, 4, 128])  # mode=sample: budgets
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.num >= 1, "num", self.num, "must be at least 1.")
        _budgets("steps", self.steps)


@dataclass
class LoggingConfig:
    progress: bool = True
    wandb: bool = False
    tensorboard: bool = False


PLAIN_GROUPS: dict[str, type] = {
    "train": TrainConfig,
    "parallel": ParallelConfig,
    "eval": EvalConfig,
    "sample": SampleConfig,
    "logging": LoggingConfig,
}
COMPONENT_GROUPS = ("domain", "model", "objective")


@dataclass
class RunConfig:
    domain: Any  # the domain class's Config
    model: Any  # the backbone class's Config
    objective: Any  # the objective class's Config
    mode: str = "train"  # train | eval | sample
    seed: int = 0
    out_dir: str = "runs/run"
    ckpt: Optional[str] = None  # mode=eval|sample: a run directory or its checkpoints/ folder
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)


# ---------------------------------------------------------------------------- resolution


def _accepted(schema: Any) -> str:
    return ", ".join(f.name for f in dataclasses.fields(schema) if f.name != "_target_")


def _schema_at(schema: type, path: Sequence[str]) -> type:
    """The dataclass a dotted key path lands in (for listing accepted keys of nested nodes)."""
    hints = {f.name: f for f in dataclasses.fields(schema)}
    for part in path:
        f = hints.get(part)
        default = None if f is None else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        if not dataclasses.is_dataclass(default):
            break
        schema = type(default)
        hints = {g.name: g for g in dataclasses.fields(schema)}
    return schema


def typed(schema: type, node: Any, prefix: str) -> Any:
    """``node`` (a dict) validated against the dataclass ``schema``; errors name ``prefix.key``."""
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix}: expected a group of keys ({_accepted(schema)}), got {node!r}.")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        path = str(exc.full_key).split(".")
        where = _schema_at(schema, path[:-1])
        raise ConfigError(f"{prefix}.{exc.full_key}: unknown key. Accepted: {_accepted(where)}.") from None
    except ValidationError as exc:
        reason = str(exc.msg).splitlines()[0]
        raise ConfigError(f"{prefix}.{exc.full_key}: {reason}.") from None
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{prefix}: {str(exc).splitlines()[0]}") from None


def install_hint(module: str) -> str:
    """How to get a missing module: the package extra that brings it, else its own name."""
    top = module.split(".")[0].lower().replace("-", "_")
    try:
        requirements = importlib.metadata.requires("shortcutlib") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    for line in requirements:
        name = re.split(r"[\s;<>=!~\[]", line, maxsplit=1)[0].lower().replace("-", "_")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if name == top and extra and extra.group(1) != "test":
            return f"pip install -e \".[{extra.group(1)}]\""
    return f"pip install {top}"


def _import(module_name: str, target: str, group: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if target.startswith(missing + ".") or target == missing:
            raise ConfigError(f"{group}._target_={target}: no module {missing}.") from None
        raise ConfigError(f"{group} {target} needs the package '{missing.split('.')[0]}': {install_hint(missing)}") from None


def locate(target: str, group: str) -> Any:
    """The class a ``_target_`` names. A class may list the modules it needs in ``requires``:
    they are imported now, so that a missing optional dependency is named with its install
    command before any work starts."""
    module_name, _, attr = target.rpartition(".")
    module = _import(module_name, target, group)
    if not hasattr(module, attr):
        raise ConfigError(f"{group}._target_={target}: {module_name} has no {attr}.")
    cls = getattr(module, attr)
    for dependency in getattr(cls, "requires", ()):
        _import(dependency, target, group)
    return cls


def component(node: Any, group: str) -> ComponentConfig:
    """A component's typed config: its ``_target_`` class's ``Config`` filled from ``node``."""
    if not isinstance(node, dict) or not node.get("_target_"):
        raise ConfigError(f"{group}: no {group} chosen, or its config file names no _target_ class.")
    cls = locate(str(node["_target_"]), group)
    schema = getattr(cls, "Config", None)
    if not (isinstance(schema, type) and issubclass(schema, ComponentConfig)):
        raise ConfigError(f"{group}._target_={node['_target_']}: the class has no Config dataclass (a ComponentConfig).")
    return typed(schema, node, group)


def resolve(raw: DictConfig | dict[str, Any]) -> RunConfig:
    """Validate a composed configuration (or one saved with a checkpoint) into a ``RunConfig``."""
    if isinstance(raw, DictConfig):
        try:
            data = OmegaConf.to_container(raw, resolve=True)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None)
            raise ConfigError(f"{key or 'config'}: {str(exc).splitlines()[0]}") from None
    else:
        data = dict(raw)
    data.pop("hydra", None)
    values: dict[str, Any] = {}
    for name in COMPONENT_GROUPS:
        values[name] = component(data.pop(name, None), name)
    for name, schema in PLAIN_GROUPS.items():
        values[name] = typed(schema, data.pop(name, None), name)
    scalars = {f.name for f in dataclasses.fields(RunConfig)} - set(values)
    unknown = sorted(set(data) - scalars)
    if unknown:
        accepted = ", ".join(sorted(scalars | set(values)))
        raise ConfigError(f"{unknown[0]}: unknown key. Accepted: {accepted}.")
    for name in scalars & set(data):
        values[name] = data[name]
    try:
        checked = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig(domain=None, model=None, objective=None)),
                                                      {k: v for k, v in values.items() if k in scalars}))
    except ValidationError as exc:
        raise ConfigError(f"{exc.full_key}: {str(exc.msg).splitlines()[0]}.") from None
    return dataclasses.replace(checked, **{k: v for k, v in values.items() if k not in scalars})


def as_dict(config: Any) -> dict[str, Any]:
    """Plain containers (``_target_`` included): what ``config.yaml`` and checkpoints hold."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(as_dict(config)))


# ---------------------------------------------------------------------------- composition


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_ROOT.iterdir() if p.is_dir() and not p.name.startswith("_"))


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files, and nodes stored in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    stored = ConfigStore.instance().repo.get(group, {})
    names = {p.stem for p in (CONFIG_ROOT / group).glob("*.yaml")}
    names |= {name.removesuffix(".yaml") for name, node in stored.items() if not isinstance(node, dict)}
    return sorted(names)


def hydra_overrides(args: Sequence[str]) -> list[str]:
    """Command-line overrides for Hydra: group choices (``domain=robot``) pass as they are; every
    ``key=value`` is an add-or-override (``++key=value``) so that unknown keys reach ``resolve``,
    which names the accepted ones in one line."""
    groups = set(config_groups())
    out = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        plain = key.lstrip("+~")
        if not sep or key != plain or key.startswith("hydra.") or plain in groups or "/" in plain:
            out.append(arg)
        else:
            out.append("++" + arg)
    return out


def check_group_choices(args: Sequence[str]) -> None:
    """One line for an unknown group choice (``domain=nope``), before Hydra's longer report."""
    groups = set(config_groups())
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in groups and value not in ("", "null") and value not in group_options(key):
            raise ConfigError(f"{key}={value}: unknown {key}. Accepted: {', '.join(group_options(key))}.")


def compose_raw(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed (not yet validated) configuration, as ``python -m shortcutlib.run <overrides>`` builds it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_ROOT), version_base=None):
            return compose(config_name="config", overrides=hydra_overrides(overrides))
    except HydraException as exc:
        raise ConfigError(" ".join(str(exc).split())) from None


def compose_config(overrides: Sequence[str] = ()) -> RunConfig:
    """``compose_config(["domain=toy2d", "train.steps=100"])`` is the run config of
    ``python -m shortcutlib.run domain=toy2d train.steps=100``, validated and typed."""
    return resolve(compose_raw(overrides))


def instantiate(config: ComponentConfig, *args: Any, **kwargs: Any) -> Any:
    """``TargetClass(config, *args, **kwargs)`` for a component's typed config."""
    group = type(config).__qualname__
    return locate(config._target_, group)(config, *args, **kwargs)
