"""Typed configuration: a YAML file plus dotted ``key=value`` overrides, validated by pydantic.

Unknown keys and method names are errors that list the valid choices. ``{data_dir}`` inside a data path is
replaced by the top-level ``data_dir`` value, so one config works for any local copy of the data.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtfuse.errors import ConfigError
from mtfuse.params import Strict, params_check  # noqa: F401  (re-exported)


class DataConfig(Strict):
    """Where one task's data comes from. ``format`` picks a reader (see ``mtfuse.tasks.readers``)."""

    format: str
    path: str | None = None  # a directory (glue, conll) or, for generic formats, a default folder for files
    task: str | None = None  # GLUE task name (CoLA, SST-2, MRPC, RTE, WNLI, STS-B) for format 'glue'
    files: dict[str, str] = Field(default_factory=dict)  # split -> file, for csv/tsv/jsonl/parquet/conll
    name: str | None = None  # Hugging Face datasets name (format 'hf'), or a local dataset directory
    config_name: str | None = None  # Hugging Face datasets config
    splits: dict[str, str] = Field(default_factory=dict)  # mtfuse split -> source split name (format 'hf')


class TaskConfig(Strict):
    name: str
    type: str
    data: DataConfig
    text_fields: list[str] | None = None  # 1 (sentence) or 2 (pair); for token tasks the token-list field
    label_field: str | None = None
    labels: list[str] | None = None  # fixed label order; default: sorted labels seen in train
    metrics: list[str] | None = None  # default: the task type's metrics
    max_length: int = 128
    loss_weight: float = 1.0
    pooling: Literal["pooler", "cls", "mean"] | None = None  # default: model.pooling
    # encoder layer the head reads (hierarchical sharing); default: last. The index into HF hidden_states:
    # 0 = embeddings, 1..L = transformer layers, negative = from the top (-1 = last)
    layer: int | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError(f"task name '{v}' must be letters, digits, '-' or '_'")
        return v


class SharingConfig(BaseModel):
    """``method`` (hard, soft, adapters, mmoe: ``mtfuse.model.sharing``) plus that method's own parameters."""

    model_config = ConfigDict(extra="allow")
    method: str = "hard"


class ModelConfig(Strict):
    name_or_path: str = "default"  # 'default' = the packaged all-MiniLM-L6-v2 encoder
    pooling: Literal["pooler", "cls", "mean"] = "pooler"  # 'pooler' = the encoder's own pooler, as in HF
    head_dropout: float | None = None  # default: the encoder's hidden_dropout_prob
    sharing: SharingConfig = Field(default_factory=SharingConfig)  # how tasks share the encoder


class TrainConfig(Strict):
    seed: int = 42
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 32  # global batch (all processes, before accumulation)
    eval_batch_size: int = 128
    grad_accum: int = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-5
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    momentum: float = 0.9
    scheduler: Literal["linear", "constant", "cosine"] = "linear"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    max_grad_norm: float | None = 1.0
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    eval_every: int | None = None  # steps; default: once per epoch
    checkpoint_every: int | None = None  # steps; default: eval_every
    keep_checkpoints: int = 2
    select: Literal["last", "best"] = "last"  # which weights end up in run_dir/model
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    group_by_length: bool = False
    step_mode: Literal["sampled", "joint"] = (
        "sampled"  # sampled: one task's batch a step; joint: every task's
    )
    joint_tasks: int | None = (
        None  # joint mode: a sampled subset of k tasks per step (loss-level methods only)
    )
    diagnostics: bool = True  # at every evaluation, log the cosine matrix of task gradients (the conflicts)
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    cpu: bool = False  # force the CPU even where a GPU is present


class SamplingConfig(BaseModel):
    """``method`` plus that sampler's own hyperparameters (checked against the sampler's schema)."""

    model_config = ConfigDict(extra="allow")
    method: str = "proportional"


class WeightingConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str = "static"  # static = each task's loss_weight (1 by default: equal weighting)


class SubsetConfig(Strict):
    """Keep a seeded random subset of each split: short CPU runs of the full configs."""

    train: int | None = None
    eval: int | None = None
    seed: int = 0


class RunConfig(Strict):
    data_dir: str = "."
    cache_dir: str | None = None  # tokenisation cache; default ~/.cache/mtfuse (or $MTFUSE_CACHE)
    only_tasks: list[str] | None = None  # train/evaluate only these tasks of the config
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: list[TaskConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    subset: SubsetConfig = Field(default_factory=SubsetConfig)

    @model_validator(mode="after")
    def _check_tasks(self) -> RunConfig:
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate task names: {dup}")
        if self.only_tasks:
            unknown = [n for n in self.only_tasks if n not in names]
            if unknown:
                raise ValueError(f"only_tasks names unknown tasks {unknown}; choose from {names}")
            self.tasks = [t for t in self.tasks if t.name in self.only_tasks]
            self.only_tasks = None
        if not self.tasks:
            raise ValueError("the config declares no task")
        return self


# ---------------------------------------------------------------------------------------------- loading


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` to a raw config dict. ``tasks.NAME.key`` addresses a task by its name."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key=value (for example train.lr=1e-4)")
    key, _, value = override.partition("=")
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_item(node, part, here)
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"override '{key}': '{here}' is not a section")
    last = parts[-1]
    if isinstance(node, list):
        item = _list_item(node, last, key)
        item.clear()
        item.update(_parse_value(value))
    elif isinstance(node, dict):
        node[last] = _parse_value(value)
    else:
        raise ConfigError(f"override '{key}': '{'.'.join(parts[:-1])}' is not a section")


def _list_item(items: list[Any], part: str, here: str) -> Any:
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    names = [i.get("name") for i in items if isinstance(i, dict)]
    raise ConfigError(f"override '{here}': no task named '{part}'; choose from {names}")


def _valid_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names valid at ``loc`` (the parent of an unknown key), found by walking the schema."""
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        for _ in range(3):  # unwrap list[X] / X | None
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if args and not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                ann = args[0]
        model = ann
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(tuple(e["loc"][:-1]))
            choose = f"; choose from [{', '.join(valid)}]" if valid else ""
            lines.append(f"unknown config key '{loc}'{choose}")
        elif e["type"] == "missing":
            lines.append(f"missing config key '{loc}'")
        else:
            lines.append(f"config key '{loc}': {e['msg']}" if loc else e["msg"])
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)


def _substitute(cfg: RunConfig) -> RunConfig:
    data_dir = os.path.abspath(os.path.expanduser(cfg.data_dir))
    cfg.data_dir = data_dir

    def sub(s: str | None) -> str | None:
        if s is None:
            return None
        return os.path.expanduser(s.replace("{data_dir}", data_dir))

    for t in cfg.tasks:
        t.data.path = sub(t.data.path)
        t.data.files = {k: sub(v) or v for k, v in t.data.files.items()}
        if t.data.format != "hf":
            t.data.name = sub(t.data.name)
    return cfg


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    cfg = _substitute(cfg)
    try:
        validate_methods(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply dotted overrides, validate everything (keys, method names, parameters)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    for o in overrides:
        apply_override(raw, o)
    return from_dict(raw, str(p))


def validate_methods(cfg: RunConfig) -> None:
    """Check registry names (task types, readers, samplers, weightings) and their hyperparameters."""
    from mtfuse.metrics import METRICS
    from mtfuse.sampling import SAMPLERS
    from mtfuse.tasks.readers import READERS
    from mtfuse.tasks.types import TASK_TYPES
    from mtfuse.weighting import WEIGHTINGS

    for t in cfg.tasks:
        named: list[tuple[str, Any, str]] = [("type", TASK_TYPES, t.type)]
        named.append(("data.format", READERS, t.data.format))
        named += [("metrics", METRICS, m) for m in t.metrics or []]
        for key, registry, value in named:
            try:
                registry.get(value)
            except ConfigError as err:
                raise ConfigError(f"tasks.{t.name}.{key}: {err}") from None
    from mtfuse.model.sharing import SHARING

    params_check(SHARING.get(cfg.model.sharing.method), cfg.model.sharing, "model.sharing")
    params_check(SAMPLERS.get(cfg.sampling.method), cfg.sampling, "sampling")
    params_check(WEIGHTINGS.get(cfg.weighting.method), cfg.weighting, "weighting")


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
