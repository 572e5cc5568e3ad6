"""The sharing-architecture interface and its registry.

A sharing architecture decides which encoder parameters each task uses. :class:`MultiTaskModel` owns one
instance (``model.sharing``) and asks it, for every forward pass:

1. which tasks can share one encoder pass (:meth:`Sharing.passes`): all of them under hard sharing and mixture
   of experts; one pass per task when the encoder itself differs per task (adapters, soft sharing);
2. to set the encoder up for a task during its pass (:meth:`Sharing.activate`: switch the peft adapter, swap
   in the task's copy of a layer...);
3. to transform the hidden states a head reads (:meth:`Sharing.transform`: the per-task gated experts).

For training it offers :meth:`Sharing.extra_loss` (a regulariser such as soft sharing's pull towards the
shared layer) and splits the parameters into shared ones and per-task ones. For saving it writes its own files
beside the encoder (``sharing.safetensors`` holds the module's own tensors by default) and can give a cleaned
encoder state dict so that ``model.safetensors`` keeps loading with plain ``AutoModel.from_pretrained``.

Every method is built as ``cls(encoder, tasks, params)`` where ``params`` is the method's validated
``Params`` (a pydantic model; the extra keys of ``model.sharing`` in the config) or None when it takes none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.registry import Registry

SHARING_JSON = "sharing.json"  # {"format_version": 1, "method": ..., "params": {...}}; absent = hard sharing
SHARING_WEIGHTS = "sharing.safetensors"  # the sharing module's own tensors (soft copies, experts, gates)


class Sharing(nn.Module):
    """Base of all sharing architectures; on its own it is hard sharing (every task uses all the encoder)."""

    Params: ClassVar[type[BaseModel] | None] = None
    per_task_encoder: ClassVar[bool] = False
    """True when the encoder computes something different for each task, so ``forward_all`` runs it once per
    task."""
    transforms_hidden: ClassVar[bool] = False
    """True when :meth:`transform` changes the hidden states (the pooler is then re-applied to its output)."""

    def __init__(self, encoder: PreTrainedModel, tasks: list[str], params: BaseModel | None) -> None:
        super().__init__()
        self.method = ""  # the registry name, set by build_sharing
        self.params = params
        self.tasks = list(tasks)
        # a list, not an attribute: the encoder must not be registered twice (once here, once in the model)
        self._encoder: list[PreTrainedModel] = [encoder]

    @property
    def encoder(self) -> PreTrainedModel:
        return self._encoder[0]

    # --------------------------------------------------------------------------------------- forward path

    def passes(self, tasks: list[str]) -> list[tuple[str | None, list[str]]]:
        """``[(task to activate or None, tasks whose heads read that pass)]``."""
        if self.per_task_encoder:
            return [(t, [t]) for t in tasks]
        return [(None, list(tasks))]

    def activate(self, task: str | None) -> AbstractContextManager[None]:
        """A context in which the encoder computes ``task``'s representation (None: the shared encoder)."""
        return nullcontext()

    def transform(
        self, task: str, hidden: Tensor, attention_mask: Tensor | None, cache: dict[str, Any]
    ) -> Tensor:
        """What ``task``'s head reads, from the encoder's hidden states [B,T,H]. ``cache`` is one dict per
        hidden-state tensor and pass: work shared by the tasks that read the same tensor can be kept there."""
        return hidden

    # ------------------------------------------------------------------------------------------ training

    def extra_loss(self) -> Tensor | None:
        """A regulariser to add to the training loss (None: nothing to add)."""
        return None

    def shared_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters every task's forward pass uses, named as in the encoder (``encoder.`` is prefixed by the
        model) or in this module (``sharing.`` prefixed)."""
        for name, p in self.encoder.named_parameters():
            yield f"encoder.{name}", p

    def task_named_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters only ``task`` uses, besides its head."""
        return iter(())

    # ------------------------------------------------------------------------------------------- saving

    def describe(self) -> dict[str, Any]:
        """The ``sharing.json`` content that rebuilds this architecture."""
        params = self.params.model_dump(mode="json") if self.params is not None else {}
        return {"format_version": 1, "method": self.method, "params": params}

    def encoder_state_dict(self) -> dict[str, Tensor] | None:
        """The encoder's tensors as ``AutoModel`` expects them, when they differ from its own state dict."""
        return None

    def save(self, directory: Path) -> None:
        """Write this architecture's own tensors (default: the module's state dict, when it has any)."""
        state = {k: t.detach().contiguous().cpu() for k, t in self.state_dict().items()}
        if state:
            tmp = directory / f".{SHARING_WEIGHTS}.tmp"
            save_file(state, str(tmp), metadata={"format": "pt"})
            tmp.replace(directory / SHARING_WEIGHTS)

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote into this freshly built module."""
        expected = self.state_dict()
        if not expected:
            return
        path = directory / SHARING_WEIGHTS
        if not path.is_file():
            raise MtfuseError(f"{path}: missing (sharing method '{self.method}' keeps its weights there)")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise MtfuseError(f"{path}: not a readable safetensors file ({e})") from None
        check_tensors(tensors, expected, path, SHARING_JSON)
        self.load_state_dict(tensors, strict=True)


SHARING: Registry[type[Sharing]] = Registry("sharing method")


def check_tensors(
    tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: Path, spec: str
) -> None:
    """Same keys and shapes, or an error that names the file and the first bad tensor."""
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise MtfuseError(f"{source}: missing tensor '{missing[0]}' ({spec} declares it)")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise MtfuseError(f"{source}: unexpected tensor '{extra[0]}' ({spec} does not declare it)")
    for key, ref in expected.items():
        if tensors[key].shape != ref.shape:
            raise MtfuseError(
                f"{source}: tensor '{key}' has shape {list(tensors[key].shape)}, "
                f"{spec} implies {list(ref.shape)}"
            )


def sharing_spec(sharing: Any) -> dict[str, Any]:
    """``model.sharing`` as a dict ``{"method": ..., **params}`` (from the config section, a dict or None)."""
    if sharing is None:
        return {"method": "hard"}
    if isinstance(sharing, BaseModel):
        return sharing.model_dump()  # method + the extra keys (the method's parameters)
    if isinstance(sharing, Mapping):
        spec = dict(sharing)
        spec.setdefault("method", "hard")
        return spec
    raise ConfigError(f"model.sharing: expected a mapping with 'method', got {type(sharing).__name__}")


def build_sharing(encoder: PreTrainedModel, tasks: list[str], sharing: Any = None) -> Sharing:
    """Build the architecture named by ``sharing["method"]``, its parameters checked against its Params."""
    from mtfuse.config import SharingConfig
    from mtfuse.params import params_check

    spec = sharing_spec(sharing)
    method = spec.get("method")
    if not isinstance(method, str):
        raise ConfigError(f"model.sharing.method: expected a name, got {method!r}")
    cls = SHARING.get(method)
    section = SharingConfig.model_validate(spec)
    checked = params_check(cls, section, "model.sharing")  # also refuses keys a method without Params gets
    params = checked if cls.Params is not None else None
    instance = cls(encoder, tasks, params)
    instance.method = method
    return instance


def encoder_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The encoder's list of transformer layers: the first ``nn.ModuleList`` with ``num_hidden_layers`` items
    (``encoder.layer`` in BERT, RoBERTa, MiniLM, ELECTRA; ``transformer.layer`` in DistilBERT...)."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    for _, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise MtfuseError(
        f"cannot find the transformer layers of {type(encoder).__name__} (no list of {n} modules); "
        "this sharing method needs an encoder with a layer list"
    )


def normalize_layer(layer: int, count: int, what: str) -> int:
    """``layer`` in ``[-count, count)`` as an index in ``[0, count)``; errors name ``what``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise ConfigError(
            f"{what}: layer {layer!r} is out of range; this encoder has {count} (0..{count - 1})"
        )
    return layer % count
