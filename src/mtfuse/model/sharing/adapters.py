"""Per-task adapters (peft) over one shared encoder, frozen or trained.

LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022. (IA)^3: Liu et al.,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning", NeurIPS 2022.
Multi-task use as in Pfeiffer et al., "AdapterFusion", EACL 2021 (one adapter per task, shared base).

Each task gets its own named peft adapter injected into the encoder's layers
(``peft.inject_adapter_in_model``; the encoder stays a plain ``PreTrainedModel``). Task ``t``'s encoder pass
runs with adapter ``t`` active, so ``forward_all`` runs the encoder once per task. With ``train_base: false``
(the default) the base encoder is frozen (``requires_grad=False``; an optimizer built from trainable
parameters leaves it out) and only adapters and heads train.

``delta_penalty`` (LoRA only) adds ``delta_penalty * sum_t sum_layers ||scaling * B_t A_t||_F^2`` to the loss:
soft sharing with per-task low-rank deltas (use it with ``train_base: true``).

Saved: the base encoder without adapter layers in ``model.safetensors`` (plain ``AutoModel`` loads it), and
each task's adapter in peft's ``save_pretrained`` layout, ``adapters/<task>/adapter_config.json`` +
``adapter_model.safetensors``: ``PeftModel.from_pretrained(AutoModel.from_pretrained(model_dir),
model_dir/adapters/<task>)`` gives that task's encoder.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model.lstm import NO_ADAPTERS, is_lstm_config
from mtfuse.model.sharing.base import SHARING, SHARING_JSON, Sharing, check_tensors
from mtfuse.params import Strict

ADAPTERS_DIR = "adapters"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
_PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the tensors
_PEFT_NAMES = {"base_layer", "default", "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "ia3_l"}


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise MtfuseError("sharing method 'adapters' needs the peft package: pip install peft") from None
    return peft


@SHARING.register("adapters")
class AdapterSharing(Sharing):
    """One peft adapter per task, named after the task."""

    class Params(Strict):
        kind: Literal["lora", "ia3"] = "lora"
        r: int = Field(8, ge=1)  # LoRA rank
        alpha: float = Field(16.0, gt=0.0)  # LoRA scaling = alpha / r
        dropout: float = Field(0.0, ge=0.0, lt=1.0)  # LoRA dropout
        target_modules: list[str] | None = (
            None  # default: peft's choice for the model type (BERT: query, value)
        )
        train_base: bool = False  # train the shared encoder too (else frozen)
        delta_penalty: float = Field(0.0, ge=0.0)  # LoRA only: lambda * sum ||scaling * B A||^2

        @model_validator(mode="after")
        def _lora_only(self) -> AdapterSharing.Params:
            if self.delta_penalty and self.kind != "lora":
                raise ValueError("delta_penalty needs kind 'lora'")
            return self

    per_task_encoder = True
    params: Params

    def __init__(self, encoder: PreTrainedModel, tasks: list[str], params: Params) -> None:  # type: ignore[override]
        super().__init__(encoder, tasks, params)
        if is_lstm_config(encoder.config):
            raise ConfigError(NO_ADAPTERS)
        peft = _peft()
        # peft finds an adapter's tensors by ".<name>." in their keys: a task named like a module would clash
        parts = {part for key in encoder.state_dict() for part in key.split(".")} | _PEFT_NAMES
        clash = [t for t in tasks if t in parts]
        if clash:
            raise ConfigError(
                f"task name '{clash[0]}' is also the name of a module or tensor of the encoder; adapters are "
                "named after their task: rename the task"
            )
        for task in tasks:
            with (
                warnings.catch_warnings()
            ):  # peft warns that a second adapter joins the first: that is the point
                warnings.filterwarnings("ignore", message=".*peft_config.*")
                try:
                    peft.inject_adapter_in_model(self._peft_config(), encoder, adapter_name=task)
                except ValueError as e:  # e.g. target modules not found in this encoder
                    raise ConfigError(
                        f"model.sharing: peft could not add adapters to this encoder: {e}"
                    ) from None
        tuner = peft.tuners.tuners_utils.BaseTunerLayer
        self._tuner_layers: list[tuple[str, Any]] = [
            (name, m) for name, m in encoder.named_modules() if isinstance(m, tuner)
        ]
        # the task of each adapter parameter, by name (peft keeps them in dicts keyed by adapter name)
        self._owner: dict[str, str] = {}
        for name, layer in self._tuner_layers:
            for attr in layer.adapter_layer_names:
                for task, item in getattr(layer, attr).items():
                    prefix = f"{name}.{attr}.{task}"
                    if isinstance(item, nn.Module):
                        self._owner.update({f"{prefix}.{n}": task for n, _ in item.named_parameters()})
                    else:  # a ParameterDict entry (IA3 vectors, LoRA embedding factors)
                        self._owner[prefix] = task
        for name, p in encoder.named_parameters():  # peft froze the base and all but one adapter
            p.requires_grad_(True if name in self._owner else params.train_base)

    def _peft_config(self) -> Any:
        peft, p = _peft(), self.params
        targets = list(p.target_modules) if p.target_modules is not None else None
        if p.kind == "ia3":
            return peft.IA3Config(target_modules=targets)
        return peft.LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=targets)

    # --------------------------------------------------------------------------------------- forward path

    def activate(self, task: str | None) -> AbstractContextManager[None]:
        return self._use(task)

    @contextmanager
    def _use(self, task: str | None) -> Iterator[None]:
        # peft's set_adapter / enable_adapters also flip requires_grad (inactive adapters frozen): keep ours
        adapter_params = [p for n, p in self.encoder.named_parameters() if n in self._owner]
        flags = [p.requires_grad for p in adapter_params]
        try:
            for _, layer in self._tuner_layers:
                if task is None:
                    layer.enable_adapters(False)
                else:
                    layer.set_adapter(task)
        finally:
            _restore(adapter_params, flags)
        try:
            yield
        finally:
            if task is None:
                for _, layer in self._tuner_layers:
                    layer.enable_adapters(True)
                _restore(adapter_params, flags)

    # ------------------------------------------------------------------------------------------ training

    def extra_loss(self) -> Tensor | None:
        if not self.params.delta_penalty:
            return None
        total: Tensor | None = None
        for _, layer in self._tuner_layers:
            for task in self.tasks:
                pair = _lora_pair(layer, task)
                if pair is None:
                    continue
                a, b = pair
                # ||s B A||_F^2 = s^2 tr(A^T B^T B A) = s^2 sum((B^T B) * (A A^T)): r x r products only
                d = layer.scaling[task] ** 2 * ((b.T @ b) * (a @ a.T)).sum()
                total = d if total is None else total + d
        return None if total is None else self.params.delta_penalty * total

    def shared_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.encoder.named_parameters():
            if name not in self._owner:
                yield f"encoder.{name}", p

    def task_named_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.encoder.named_parameters():
            if self._owner.get(name) == task:
                yield f"encoder.{name}", p

    # ------------------------------------------------------------------------------------------- saving

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's tensors without adapters, under the names of the original (un-injected) model."""
        drop, rename = [], []
        for name, layer in self._tuner_layers:
            drop += [f"{name}.{attr}." for attr in (*layer.adapter_layer_names, *layer.other_param_names)]
            rename.append((f"{name}.base_layer.", f"{name}."))
        out = {}
        for key, t in self.encoder.state_dict().items():
            if key.startswith(tuple(drop)):
                continue
            for old, new in rename:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            out[key] = t
        return out

    def _adapter_state(self, task: str) -> dict[str, Tensor]:
        state = _peft().get_peft_model_state_dict(self.encoder, adapter_name=task)
        return {_PEFT_PREFIX + k: t.detach().contiguous().cpu() for k, t in state.items()}

    def save(self, directory: Path) -> None:
        root = directory / ADAPTERS_DIR
        if root.exists():
            shutil.rmtree(root)
        for task in self.tasks:
            folder = root / task
            folder.mkdir(parents=True)
            config = copy.copy(self.encoder.peft_config[task])
            config.base_model_name_or_path = None  # the base is the model directory two levels up
            if isinstance(config.target_modules, (set, list)):  # peft keeps a set: save it in a stable order
                config.target_modules = sorted(config.target_modules)
            config.save_pretrained(str(folder))
            save_file(self._adapter_state(task), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    def load(self, directory: Path) -> None:
        peft = _peft()
        for task in self.tasks:
            path = directory / ADAPTERS_DIR / task / ADAPTER_WEIGHTS
            if not path.is_file():
                raise MtfuseError(
                    f"{path}: missing (the adapter of task '{task}'; {SHARING_JSON} says adapters)"
                )
            try:
                tensors = load_file(str(path))
            except (SafetensorError, OSError, ValueError) as e:
                raise MtfuseError(f"{path}: not a readable safetensors file ({e})") from None
            check_tensors(tensors, self._adapter_state(task), path, SHARING_JSON)
            state = {k[len(_PEFT_PREFIX) :]: t for k, t in tensors.items()}
            peft.set_peft_model_state_dict(self.encoder, state, adapter_name=task)


def _restore(params: list[nn.Parameter], flags: list[bool]) -> None:
    for p, flag in zip(params, flags, strict=True):
        p.requires_grad_(flag)


def _lora_pair(layer: Any, task: str) -> tuple[Tensor, Tensor] | None:
    """LoRA factors (A [r, in], B [out, r]) of ``task`` in a peft layer, or None (not a LoRA layer / task)."""
    lora_a, lora_b = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
    if lora_a is not None and task in lora_a:
        a, b = lora_a[task].weight, lora_b[task].weight
    else:
        emb_a, emb_b = getattr(layer, "lora_embedding_A", None), getattr(layer, "lora_embedding_B", None)
        if emb_a is None or task not in emb_a:
            return None
        a, b = emb_a[task], emb_b[task]
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
