"""What data-dependent merging needs from data: per-model statistics, and scores of candidate merges.

The merge methods stay pure functions over tensors (``mtfuse.fusion.merge.methods``); this module computes what
the data-dependent ones take besides the tensors. One function per kind of statistics, registered in
:data:`STATS` under the name a method declares in ``needs_stats``:

- ``fisher``: diagonal Fisher of each input on its own tasks' train data (Fisher merging);
- ``gram``: Gram matrices of every encoder ``nn.Linear``'s inputs on each input's train data (RegMean);
- ``adamerging``: task-wise / layer-wise coefficients learned by entropy minimisation (AdaMerging);
- ``soup``: which inputs a greedy soup keeps, and whose head each task keeps (greedy soup: ``soup.py``, a
  search over merges beside ``search.py``).

Fisher and Gram statistics are computed one input model at a time (load it, compute, free it) and cached in
a temporary folder as one safetensors file per input; the streaming merge driver then reads them one tensor
name at a time, like the weights. AdaMerging needs the base and every task vector in memory at once (the
paper does the same): that is (n + 1) encoders. Greedy soups and hyperparameter searches score candidate
merges with :class:`Scorer` (one encoder + the kept heads in memory, the candidate's weights loaded into it).

The data of a task comes from the config of the run that has it (``config.yaml`` of the run directory), read
as ``prepare_tasks`` reads it for training and evaluation: ``train`` with the run's ``subset.train`` (capped
at the number of examples a statistic asks for), ``dev`` with its ``subset.eval``, and ``train-holdout``
(train rows outside the run's ``subset.train``: rows the run never trained on).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mtfuse.config import RunConfig
from mtfuse.errors import DataError, MtfuseError
from mtfuse.evaluate import evaluate_tasks
from mtfuse.metrics import aggregate
from mtfuse.model.encoder import load_saved_encoder, load_tokenizer
from mtfuse.model.multitask import HEADS_JSON, HEADS_WEIGHTS, MultiTaskModel, read_head_specs
from mtfuse.model.sharing import SHARING_JSON
from mtfuse.registry import Registry
from mtfuse.tasks.features import TaskData, collate
from mtfuse.tasks.prepare import prepare_tasks

if TYPE_CHECKING:
    from mtfuse.fusion.merge.inputs import MergeInput

SPLITS = ("train", "dev", "train-holdout")


# ------------------------------------------------------------------------------------------- statistics


class Stats:
    """Per-input statistics as the streaming driver reads them: :meth:`tensors` gives, for one tensor name,
    one tensor per input (or None where the statistics do not cover that tensor)."""

    def __init__(self, info: dict[str, Any] | None = None, head_from: dict[str, int] | None = None) -> None:
        self.info: dict[str, Any] = info or {}  # JSON-ready summary for merge.json
        self.head_from = head_from  # task -> index of the input whose head the merged model keeps

    def tensors(self, name: str) -> list[Tensor] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release files (and the temporary folder) the statistics live in."""

    def __enter__(self) -> Stats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileStats(Stats):
    """One safetensors file per input (tensor name -> statistic), read lazily one name at a time."""

    def __init__(
        self,
        files: list[Path],
        info: dict[str, Any] | None = None,
        tmpdir: tempfile.TemporaryDirectory | None = None,
    ) -> None:
        super().__init__(info)
        self.files = files
        self._tmpdir = tmpdir
        self._stack = ExitStack()
        self._handles: list[Any] | None = None

    def tensors(self, name: str) -> list[Tensor] | None:
        if self._handles is None:
            self._handles = [self._stack.enter_context(safe_open(str(f), "pt")) for f in self.files]
        have = [name in h.keys() for h in self._handles]  # noqa: SIM118  (safe_open has no __contains__)
        if not any(have):
            return None
        if not all(have):
            missing = self.files[have.index(False)]
            raise MtfuseError(f"statistics of tensor '{name}' are missing from {missing}")
        return [h.get_tensor(name) for h in self._handles]

    def close(self) -> None:
        self._stack.close()
        self._handles = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class CoefficientStats(Stats):
    """One number per input per group of tensors (``group_of(name)``): AdaMerging lambdas, soup membership."""

    def __init__(
        self,
        values: list[dict[str, float]],
        group_of: Callable[[str], str] = lambda name: "all",
        default: float | None = None,
        info: dict[str, Any] | None = None,
        head_from: dict[str, int] | None = None,
    ) -> None:
        super().__init__(info, head_from)
        self.values = values
        self.group_of = group_of
        self.default = default

    def tensors(self, name: str) -> list[Tensor] | None:
        g = self.group_of(name)
        out = []
        for v in self.values:
            x = v.get(g, self.default)
            if x is None:
                raise MtfuseError(f"no coefficient for tensor '{name}' (group '{g}')")
            out.append(torch.tensor(float(x)))
        return out


@dataclass
class StatsContext:
    """Everything a statistics function may use; the driver (``mtfuse.fusion.merge.driver``) fills it in."""

    inputs: list[MergeInput]
    params: BaseModel  # the method's parameters
    seed: int
    names: list[str]  # tensor names of the encoder checkpoints being merged
    read: Callable[[int, str], Tensor]  # input i's tensor
    read_base: Callable[[str], Tensor] | None  # the base model's tensor (None without a base)
    merge_with: Callable[[Stats], dict[str, Tensor]]  # the method's whole merge under given statistics
    log: Callable[[str], None] = print
    workdir: Path | None = None  # where file statistics go (default: a new temporary folder)
    no_base: list[str] = field(default_factory=list)  # tensors the base lacks (merged as the inputs' mean)


StatsFn = Callable[[StatsContext], Stats]
STATS: Registry[StatsFn] = Registry("merge statistics")


def compute_stats(kind: str, ctx: StatsContext) -> Stats:
    """The statistics of ``kind`` (a method's ``needs_stats``), timed; the time goes into ``info``."""
    for inp in ctx.inputs:
        if (inp.model_dir / SHARING_JSON).is_file():
            raise MtfuseError(
                f"{inp.run_dir}: trained with a sharing method other than hard sharing ({SHARING_JSON}); "
                f"data-dependent merging reads hard-sharing runs only"
            )
        if inp.run_config is None:
            raise MtfuseError(
                f"{inp.run_dir}: no config.yaml; data-dependent merging needs the run's task data"
            )
    t0 = time.perf_counter()
    stats = STATS.get(kind)(ctx)
    stats.info["kind"] = kind
    stats.info["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _new_files(ctx: StatsContext, prefix: str) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if ctx.workdir is not None:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        return ctx.workdir, None
    tmp = tempfile.TemporaryDirectory(prefix=f"mtfuse-{prefix}-")
    return Path(tmp.name), tmp


# ------------------------------------------------------------------------------------------------ data


def device_for(inputs: list[MergeInput]) -> torch.device:
    cpu = any(i.run_config is not None and i.run_config.train.cpu for i in inputs)
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def _task_config(inp: MergeInput, tasks: list[str]) -> RunConfig:
    """The run's config restricted to ``tasks`` (in that order)."""
    cfg = inp.run_config
    assert cfg is not None
    by_name = {t.name: t for t in cfg.tasks}
    for t in tasks:
        if t not in by_name:
            raise MtfuseError(f"{inp.run_dir}: config.yaml has no task '{t}' (its model has a head for it)")
    return cfg.model_copy(update={"tasks": [by_name[t] for t in tasks], "only_tasks": None})


def _cap(n: int | None, cap: int | None) -> int | None:
    if cap is None:
        return n
    return cap if n is None else min(n, cap)


def load_split(
    inputs: list[MergeInput],
    split: str,
    tokenizer: Any,
    examples: int | None = None,
    tasks: dict[str, int] | None = None,
) -> dict[str, TaskData]:
    """Tokenised ``split`` of every task (``tasks``: task -> the input whose config reads it; default: the
    first input that has the task), at most ``examples`` per task. Labels are encoded with that input's head
    vocabulary, so they match the head that scores them."""
    if split not in SPLITS:
        raise MtfuseError(f"unknown split '{split}'; choose from [{', '.join(SPLITS)}]")
    if tasks is None:
        tasks = {}
        for i, inp in enumerate(inputs):
            for t in inp.tasks:
                tasks.setdefault(t, i)
    out: dict[str, TaskData] = {}
    by_input: dict[int, list[str]] = {}
    for t, i in tasks.items():
        by_input.setdefault(i, []).append(t)
    for i, names in by_input.items():  # one prepare_tasks call (one tokenizer set-up) per input
        inp = inputs[i]
        specs = read_head_specs(inp.model_dir / HEADS_JSON)
        vocabs = {t: specs[t].labels for t in names}
        cfg = _task_config(inp, names)
        key = "train" if split == "train" else "eval"
        subset = cfg.subset.model_copy(update={key: _cap(getattr(cfg.subset, key), examples)})
        try:
            out.update(
                prepare_tasks(cfg.model_copy(update={"subset": subset}), tokenizer, [split], vocabs=vocabs)
            )
        except DataError as e:  # name the run: several inputs may read the same task
            raise MtfuseError(f"{inp.run_dir}: {e}") from None
    return {t: out[t] for t in tasks}


def _batches(n: int, size: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


# ----------------------------------------------------------------------------------------------- models


def build_model(inputs: list[MergeInput], head_from: dict[str, int], device: torch.device) -> MultiTaskModel:
    """The encoder architecture of the first input (weights to be replaced) + ``heads[t]`` of input
    ``head_from[t]`` for every task, in eval mode on ``device``."""
    first = inputs[min(head_from.values(), default=0)]
    encoder = load_saved_encoder(first.model_dir)
    specs = {t: read_head_specs(inputs[i].model_dir / HEADS_JSON)[t] for t, i in head_from.items()}
    with torch.random.fork_rng(devices=[]):  # fresh heads draw random numbers; keep the caller's RNG state
        model = MultiTaskModel.build(encoder, specs)
    by_input: dict[int, dict[str, Tensor]] = {}
    for t, i in head_from.items():
        if i not in by_input:
            by_input[i] = load_file(str(inputs[i].model_dir / HEADS_WEIGHTS))
        state = {k[len(t) + 1 :]: v for k, v in by_input[i].items() if k.startswith(f"{t}.")}
        model.heads[t].load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_encoder_state(model: MultiTaskModel, state: dict[str, Tensor]) -> None:
    """Copy a merged encoder state dict into ``model.encoder`` (every parameter must be there)."""
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    params = {n for n, _ in model.encoder.named_parameters()}
    if unexpected or any(m in params for m in missing):
        bad = unexpected[0] if unexpected else next(m for m in missing if m in params)
        raise MtfuseError(f"merged encoder and model disagree on tensor '{bad}'")


class Scorer:
    """Scores encoder weights on one split of every task with fixed heads: the selection score of greedy soups
    and hyperparameter searches (the GLUE-style average of ``mtfuse.metrics.aggregate``)."""

    def __init__(
        self,
        inputs: list[MergeInput],
        head_from: dict[str, int],
        split: str,
        data: dict[str, TaskData] | None = None,
    ) -> None:
        self.split = split
        self.device = device_for(inputs)
        self.model = build_model(inputs, head_from, self.device)
        tokenizer = load_tokenizer(str(inputs[0].model_dir))
        self.pad_id = tokenizer.pad_token_id or 0
        self.tasks = data if data is not None else load_split(inputs, split, tokenizer, tasks=head_from)
        self.tasks = {t: self.tasks[t] for t in head_from}
        cfg = inputs[0].run_config
        self.batch_size = cfg.train.eval_batch_size if cfg is not None else 128

    def score(self, encoder_state: dict[str, Tensor] | None = None) -> dict[str, Any]:
        """``{"tasks": {task: {metric: value}}, "average": float}`` of the model with ``encoder_state``."""
        if encoder_state is not None:
            load_encoder_state(self.model, encoder_state)
        metrics, _ = evaluate_tasks(
            self.model, self.tasks, self.split, self.batch_size, self.device, self.pad_id
        )
        return {"tasks": metrics, "average": aggregate(metrics)}


def load_run_model(inp: MergeInput, device: torch.device) -> tuple[MultiTaskModel, Any]:
    model, tokenizer = MultiTaskModel.load(inp.model_dir)
    if tokenizer is None:
        tokenizer = load_tokenizer(str(inp.model_dir))
    return model.to(device).eval(), tokenizer


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------- Fisher


@STATS.register("fisher")
def fisher_stats(ctx: StatsContext) -> FileStats:
    """Diagonal Fisher of each input's encoder: mean over examples of (d log p(y|x) / d theta)^2."""
    p = ctx.params
    folder, tmp = _new_files(ctx, "fisher")
    device = device_for(ctx.inputs)
    names = set(ctx.names)
    files, info = [], {"label": p.label, "normalize": p.normalize, "examples": {}}  # type: ignore[attr-defined]
    for i, inp in enumerate(ctx.inputs):
        model, tokenizer = load_run_model(inp, device)
        for prm in model.heads.parameters():
            prm.requires_grad_(False)
        params = {n: prm for n, prm in model.encoder.named_parameters() if n in names}
        if not params:
            raise MtfuseError(f"{inp.run_dir}: no encoder parameter matches the checkpoint's tensor names")
        for prm in params.values():
            prm.requires_grad_(True)
        fisher = {n: torch.zeros_like(prm, dtype=torch.float32) for n, prm in params.items()}
        data = load_split([inp], "train", tokenizer, p.fisher_examples)  # type: ignore[attr-defined]
        gen = torch.Generator().manual_seed(ctx.seed * 1000003 + i)
        count = 0
        for name, task in data.items():
            enc = task.splits["train"]
            for j in range(len(enc)):
                batch = _to(collate(enc, [j], tokenizer.pad_token_id or 0, task.type), device)
                labels = batch.pop("labels")
                model.zero_grad(set_to_none=True)
                ll = task.type.fisher_log_likelihood(model(name, batch), labels, p.label, gen)  # type: ignore[attr-defined]
                ll.backward()
                for n, prm in params.items():
                    if prm.grad is not None:
                        fisher[n].add_(prm.grad.detach().float() ** 2)
                count += 1
        out = {n: (f / max(count, 1)).cpu().contiguous() for n, f in fisher.items()}
        if p.normalize:  # type: ignore[attr-defined]
            total = sum(float(f.sum()) for f in out.values())
            entries = sum(f.numel() for f in out.values())
            if total > 0:
                mean = total / entries
                out = {n: f / mean for n, f in out.items()}
        path = folder / f"fisher-{i}.safetensors"
        save_file(out, str(path))
        files.append(path)
        info["examples"][str(inp.run_dir)] = count
        ctx.log(f"fisher: {inp.run_dir} ({count} examples)")
        del model, params, fisher, out
    return FileStats(files, info, tmp)


# ----------------------------------------------------------------------------------------------- RegMean


def _gram_hook(
    grams: dict[str, Tensor], counts: dict[str, int], key: str, mask: dict[str, Tensor]
) -> Callable[..., None]:
    """A forward pre-hook adding X^T X of a Linear's input (real tokens: ``mask["now"]``) to ``grams``."""

    def fn(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        m = mask["now"]
        x = x[m] if x.dim() == 3 and tuple(x.shape[:2]) == tuple(m.shape) else x.reshape(-1, x.shape[-1])
        x = x.to(torch.float64).cpu()
        grams[key].add_(x.T @ x)
        counts[key] += x.shape[0]

    return fn


@STATS.register("gram")
def gram_stats(ctx: StatsContext) -> FileStats:
    """Per encoder ``nn.Linear`` (keyed by its weight's name): X^T X / n over the real tokens it sees."""
    p = ctx.params
    folder, tmp = _new_files(ctx, "gram")
    device = device_for(ctx.inputs)
    names = set(ctx.names)
    files, info = [], {"tokens": {}}
    for i, inp in enumerate(ctx.inputs):
        model, tokenizer = load_run_model(inp, device)
        linears = {
            f"{n}.weight": m
            for n, m in model.encoder.named_modules()
            if isinstance(m, nn.Linear) and f"{n}.weight" in names
        }
        grams = {
            k: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for k, m in linears.items()
        }
        counts = dict.fromkeys(linears, 0)
        mask: dict[str, Tensor] = {}
        handles = [
            m.register_forward_pre_hook(_gram_hook(grams, counts, k, mask)) for k, m in linears.items()
        ]
        try:
            data = load_split([inp], "train", tokenizer, p.gram_examples)  # type: ignore[attr-defined]
            with torch.no_grad():
                for task in data.values():
                    enc = task.splits["train"]
                    for idx in _batches(len(enc), 32, 0):
                        batch = _to(collate(enc, idx, tokenizer.pad_token_id or 0, task.type), device)
                        batch.pop("labels", None)
                        mask["now"] = batch["attention_mask"].bool()
                        model.encode(batch)
        finally:
            for h in handles:
                h.remove()
        out = {k: (g / max(counts[k], 1)).float().contiguous() for k, g in grams.items() if counts[k] > 0}
        path = folder / f"gram-{i}.safetensors"
        save_file(out, str(path))
        files.append(path)
        info["tokens"][str(inp.run_dir)] = max(counts.values(), default=0)
        ctx.log(f"gram: {inp.run_dir} ({len(out)} Linear layers)")
        del model, grams
    return FileStats(files, info, tmp)


# -------------------------------------------------------------------------------------------- AdaMerging


def group_of(granularity: str) -> Callable[[str], str]:
    """Tensor name -> coefficient group: one ('task'), per encoder block ('layer'), per tensor ('tensor')."""
    if granularity == "task":
        return lambda name: "all"
    if granularity == "tensor":
        return lambda name: name

    def block(name: str) -> str:
        parts = name.split(".")
        for j, part in enumerate(parts[:-1]):
            if part in ("layer", "layers", "h", "block") and parts[j + 1].isdigit():
                return ".".join(parts[: j + 2])
        return parts[0]

    return block


@STATS.register("adamerging")
def adamerging_stats(ctx: StatsContext) -> CoefficientStats:
    """Lambdas (per input, per group) minimising the summed prediction entropy of every task head."""
    p: Any = ctx.params
    n = len(ctx.inputs)
    groups_fn = group_of(p.granularity)
    if n == 1:
        return CoefficientStats([{}], default=1.0, info={"note": "one input: lambda = 1, the input itself"})
    if ctx.read_base is None:
        raise MtfuseError("AdaMerging needs the base model (pass --base)")
    device = device_for(ctx.inputs)
    head_from = {t: i for i, inp in enumerate(ctx.inputs) for t in inp.tasks}
    model = build_model(ctx.inputs, head_from, device)
    for prm in model.parameters():
        prm.requires_grad_(False)
    tokenizer = load_tokenizer(str(ctx.inputs[0].model_dir))
    pad = tokenizer.pad_token_id or 0
    data = load_split(ctx.inputs, p.split, tokenizer, p.examples, tasks=head_from)
    probe = {t: d for t, d in data.items() if not d.type.continuous}  # a distribution to take the entropy of
    if not probe:
        raise MtfuseError(
            "AdaMerging minimises prediction entropy: it needs at least one non-regression task"
        )

    enc_params = {n for n, _ in model.encoder.named_parameters()}
    names = [nm for nm in ctx.names if nm in enc_params and nm not in ctx.no_base]
    base = {nm: ctx.read_base(nm).to(device, torch.float32) for nm in names}
    fixed = {  # no base, no task vectors: the inputs' mean, as the merge will have them
        f"encoder.{nm}": sum(ctx.read(k, nm).to(device, torch.float32) for k in range(n)) / n
        for nm in ctx.no_base
        if nm in enc_params
    }
    taus = [{nm: ctx.read(k, nm).to(device, torch.float32) - base[nm] for nm in names} for k in range(n)]
    groups = sorted({groups_fn(nm) for nm in names})
    gidx = {g: j for j, g in enumerate(groups)}
    col = [gidx[groups_fn(nm)] for nm in names]
    raw = torch.full((n, len(groups)), float(p.init), device=device, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=p.lr)
    order = {t: _batches(len(d.splits[p.split]), p.batch_size, ctx.seed) for t, d in probe.items()}

    curve: list[float] = []
    for step in range(p.steps + 1):
        lam = raw.clamp(0.0, 1.0)  # the paper's code clamps in the forward pass
        merged = dict(fixed)
        for nm, j in zip(names, col, strict=True):
            t = base[nm]
            for k in range(n):
                t = t + lam[k, j] * taus[k][nm]
            merged[f"encoder.{nm}"] = t
        total = torch.zeros((), device=device)
        for t, d in probe.items():
            idx = order[t][step % len(order[t])]
            batch = _to(collate(d.splits[p.split], idx, pad, d.type), device)
            batch.pop("labels", None)
            logits = torch.func.functional_call(model, merged, args=(t, batch))
            h = d.type.prediction_entropy(logits, batch["attention_mask"])
            total = total + h if h is not None else total
        curve.append(round(float(total.detach()), 6))
        if step == p.steps:
            break
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    final = raw.detach().clamp(0.0, 1.0).cpu()
    values = [{g: float(final[k, j]) for g, j in gidx.items()} for k in range(n)]
    ctx.log(f"adamerging: entropy {curve[0]:.4f} -> {curve[-1]:.4f} in {p.steps} steps")
    info = {
        "entropy": curve,
        "lambdas": {str(inp.run_dir): values[k] for k, inp in enumerate(ctx.inputs)},
        "tasks_probed": sorted(probe),
        "split": p.split,
    }
    return CoefficientStats(values, groups_fn, default=float(p.init), info=info)
