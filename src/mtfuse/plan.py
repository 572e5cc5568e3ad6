"""config -> plan: resolve a validated config into the objects a run is built from, with their defaults, and
run every cross-field check, before any model is loaded or any data is tokenised.

``config.load`` calls :func:`make_plan` (so ``mtfuse data check`` and every command report these errors at
once) and keeps the resolved config: the run directory's ``config.yaml`` then records every parameter,
defaults included (``weighting: {method: cagrad, c: 0.4, rescale: 1}``), so a run is reproducible from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mtfuse.config import LstmConfig, RunConfig, SamplingConfig, SharingConfig, WeightingConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.metrics import METRICS
from mtfuse.model.encoder import LSTM
from mtfuse.model.lstm import NO_ADAPTERS
from mtfuse.model.sharing import SHARING
from mtfuse.params import params_check
from mtfuse.sampling import SAMPLERS
from mtfuse.tasks.readers import READERS
from mtfuse.tasks.types import TASK_TYPES, TaskType
from mtfuse.weighting import WEIGHTINGS

STEP_SAMPLED, STEP_JOINT_LOSS, STEP_JOINT_GRADIENT = "sampled", "joint-loss", "joint-gradient"


@dataclass
class Plan:
    """What a run is made of: the resolved config plus the classes and checked parameters it names."""

    cfg: RunConfig
    task_types: dict[str, TaskType]
    sampler: type
    sampler_params: BaseModel
    weighting: type
    weighting_params: BaseModel
    step: str  # STEP_SAMPLED, STEP_JOINT_LOSS or STEP_JOINT_GRADIENT

    @property
    def joint(self) -> bool:
        return self.step != STEP_SAMPLED


def _named(registry: Any, value: str, key: str) -> Any:
    try:
        return registry.get(value)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


def _resolved(section_cls: type[BaseModel], method: str, params: BaseModel) -> Any:
    """The section with every parameter written out (defaults included)."""
    return section_cls(method=method, **params.model_dump(mode="json"))


def make_plan(cfg: RunConfig) -> Plan:
    """Check names, parameters and cross-field rules; return the plan with the resolved config."""
    types: dict[str, TaskType] = {}
    for t in cfg.tasks:
        ttype = _named(TASK_TYPES, t.type, f"tasks.{t.name}.type")
        _named(READERS, t.data.format, f"tasks.{t.name}.data.format")
        for m in t.metrics or []:
            _named(METRICS, m, f"tasks.{t.name}.metrics")
            if not ttype.metric_fits(m):
                raise ConfigError(
                    f"tasks.{t.name}.metrics: metric '{m}' does not fit task type '{t.type}'; "
                    f"choose from {list(ttype.metrics_allowed)}"
                )
        if t.text_fields is not None and len(t.text_fields) not in ttype.text_fields_allowed:
            raise ConfigError(
                f"tasks.{t.name}.text_fields: task type '{t.type}' takes "
                f"{' or '.join(map(str, ttype.text_fields_allowed))} text field(s), got {len(t.text_fields)}"
            )
        for other in TASK_TYPES:  # a type's own options section belongs to tasks of that type only
            section = TASK_TYPES.get(other).options_field
            if section and section != ttype.options_field and getattr(t, section, None) is not None:
                raise ConfigError(
                    f"tasks.{t.name}.{section}: applies to tasks of type '{other}', not '{t.type}'"
                )
        types[t.name] = ttype

    sharing_cls = SHARING.get(cfg.model.sharing.method)
    sharing_params = params_check(sharing_cls, cfg.model.sharing, "model.sharing")
    sampler_cls = SAMPLERS.get(cfg.sampling.method)
    sampler_params = params_check(sampler_cls, cfg.sampling, "sampling")
    weighting_cls = WEIGHTINGS.get(cfg.weighting.method)
    weighting_params = params_check(weighting_cls, cfg.weighting, "weighting")

    tr, method = cfg.train, cfg.weighting.method
    needs_all = (
        weighting_cls.is_gradient_method
        or weighting_cls.needs_shared_layer_grads
        or weighting_cls.needs_updated_losses
    )
    if needs_all and tr.step_mode != "joint":
        raise ConfigError(
            f"weighting '{method}' needs every task's loss in every step: set train.step_mode=joint"
        )
    if needs_all and tr.joint_tasks:
        raise ConfigError(f"weighting '{method}' needs every task in every step: unset train.joint_tasks")
    if weighting_cls.is_gradient_method and tr.grad_accum > 1:
        raise ConfigError(
            f"weighting '{method}' aggregates task gradients per step: "
            "train.grad_accum must be 1 (raise batch_size instead)"
        )
    if tr.joint_tasks is not None and not 1 <= tr.joint_tasks <= len(cfg.tasks):
        raise ConfigError(f"train.joint_tasks must be between 1 and the number of tasks ({len(cfg.tasks)})")
    if tr.joint_tasks is not None and tr.step_mode != "joint":
        raise ConfigError("train.joint_tasks applies to train.step_mode=joint only")
    if tr.warmup_steps is not None and tr.max_steps is not None and tr.warmup_steps > tr.max_steps:
        raise ConfigError(f"train.warmup_steps={tr.warmup_steps} is more than train.max_steps={tr.max_steps}")

    _check_lstm(cfg)

    step = STEP_SAMPLED
    if tr.step_mode == "joint":
        step = STEP_JOINT_GRADIENT if weighting_cls.is_gradient_method else STEP_JOINT_LOSS

    update: dict[str, Any] = {
        "sampling": _resolved(SamplingConfig, cfg.sampling.method, sampler_params),
        "weighting": _resolved(WeightingConfig, method, weighting_params),
    }
    model = cfg.model.model_copy(
        update={"sharing": _resolved(SharingConfig, cfg.model.sharing.method, sharing_params)}
    )
    if model.pooling is None:
        model.pooling = _default_pooling(model.name_or_path)
    if model.name_or_path == LSTM:  # every architecture field written out, the init seed resolved
        lstm = model.lstm or LstmConfig()
        seed = tr.seed if lstm.init_seed is None else lstm.init_seed
        model.lstm = lstm.model_copy(update={"init_seed": seed})
    update["model"] = model
    resolved = cfg.model_copy(update=update)
    return Plan(resolved, types, sampler_cls, sampler_params, weighting_cls, weighting_params, step)


def _check_lstm(cfg: RunConfig) -> None:
    """What the from-scratch LSTM encoder cannot do, refused before anything is loaded."""
    if cfg.model.name_or_path == LSTM and cfg.model.sharing.method == "adapters":
        raise ConfigError(NO_ADAPTERS)


def _default_pooling(name_or_path: str) -> str:
    """The pooling the checkpoint was trained with (sentence-transformers configs say), else the pooler."""
    from mtfuse.model.encoder import default_pooling

    return default_pooling(name_or_path)


def check_encoder(cfg: RunConfig, encoder_config: Any) -> None:
    """Checks that need the encoder's config (not its weights): what an encoder-decoder checkpoint works
    with, and sequence lengths within its positions."""
    from mtfuse.model.seq2seq import is_seq2seq_config

    seq2seq = is_seq2seq_config(encoder_config)
    if cfg.model.decoder == "shared" and not seq2seq:
        raise ConfigError(
            f"model.decoder: 'shared' needs an encoder-decoder checkpoint (T5, BART, ...), and "
            f"{cfg.model.name_or_path} (model type '{getattr(encoder_config, 'model_type', '?')}') is an "
            "encoder: its generation tasks each warm-start their own decoder (use per_task)"
        )
    if seq2seq and cfg.model.sharing.method != "hard":
        raise ConfigError(
            f"model.sharing.method: '{cfg.model.sharing.method}' is not supported with an encoder-decoder "
            f"checkpoint ({getattr(encoder_config, 'model_type', '?')}); use hard"
        )
    limit = getattr(encoder_config, "max_position_embeddings", None)
    if limit is None:
        return
    # RoBERTa-style models reserve padding_idx + 1 positions at the start
    if getattr(encoder_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(getattr(encoder_config, "pad_token_id", 1) or 1) + 1
    for t in cfg.tasks:
        if t.max_length > limit:
            raise ConfigError(
                f"tasks.{t.name}.max_length={t.max_length} is more than the encoder's {limit} positions "
                f"({cfg.model.name_or_path}); use at most {limit}"
            )


def check_data(plan: Plan, labels: dict[str, list[str] | None]) -> None:
    """Checks that need the label vocabularies (known once the train split is read)."""
    for t in plan.cfg.tasks:
        ttype = plan.task_types[t.name]
        for m in t.metrics or ttype.default_metrics:
            if not ttype.metric_fits_labels(m, labels.get(t.name)):
                n = len(labels.get(t.name) or [])
                raise DataError(
                    f"tasks.{t.name}.metrics: metric '{m}' needs two classes and task '{t.name}' has {n} "
                    f"({labels.get(t.name)}); choose another metric (e.g. accuracy, macro_f1)"
                )
