"""`mtfuse export RUN_DIR --format onnx [--quantize int8]`: the encoder and every head in one ONNX graph.

The graph takes the encoder's inputs (``input_ids``, ``attention_mask`` and, where the encoder has them,
``token_type_ids``; int64, axes ``[batch, sequence]``, both dynamic) and returns one output per task, named by
the task, with the logits ``MultiTaskModel.forward_all`` gives (classification ``[batch, K]``, regression
``[batch]``, token tasks ``[batch, sequence, K]``, multiple choice ``[batch / K, K]``: K consecutive rows are
one example's choices). A graph with a multiple-choice head needs a batch that is a multiple of
``row_multiple`` in ``export.json``; :class:`OnnxModel` pads batches with copies of their first row.

Written atomically (``mtfuse.rundir.write_dir_atomic``) into ``RUN_DIR/onnx/`` by default: ``model.onnx``
(fp32), ``model.int8.onnx`` (``--quantize int8``: ``onnxruntime.quantization.quantize_dynamic``, int8
weights of the linear layers), the tokenizer files, the encoder's ``config.json``, ``heads.json``, and ``export.json`` (inputs, outputs per task, the head
specs, the fp32 parity measured at export time, and a fingerprint of the model files it came from: a run
retrained or merged again after the export is refused by :func:`load_onnx` until it is exported again).
Generation tasks decode token by token with their own decoder, which this graph does not hold: they are left
out (``left_out`` in export.json says where their plain-transformers copy is, for ``optimum-cli export onnx``).

:class:`OnnxModel` stands in for the ``MultiTaskModel`` inside ``mtfuse.predict.Predictor`` (``backend`` =
``onnx`` / ``onnx-int8``), so the ONNX backend gives the same records as torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtfuse import rundir
from mtfuse.errors import MtfuseError
from mtfuse.model.multitask import HEADS_JSON, HeadSpec

FORMATS = ("onnx",)
QUANTIZE = ("int8",)
EXPORT_VERSION = 1
OPSET = 18
PARITY_TOLERANCE = 1e-4  # max |logit difference| between torch and onnxruntime (fp32) on the probe batch


class AllHeads(nn.Module):
    """``forward(*encoder inputs) -> tuple of per-task logits`` (the order of ``tasks``): what is exported."""

    def __init__(self, model: nn.Module, tasks: list[str], inputs: list[str]) -> None:
        super().__init__()
        self.model, self.tasks, self.inputs = model, list(tasks), list(inputs)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.model.forward_all({k: given[k] for k in self.inputs}, self.tasks)
        return tuple(out[t] for t in self.tasks)


def row_multiple(specs: dict[str, HeadSpec]) -> int:
    """Rows per example of the heads that group rows (multiple choice: its choices); their lcm."""
    return math.lcm(1, *(s.num_outputs for s in specs.values() if s.head == "multiple_choice"))


def _rows_per_example(spec: HeadSpec) -> int:
    return spec.num_outputs if spec.head == "multiple_choice" else 1


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model directory's weight and head files (what an export was made from)."""
    h = hashlib.sha256()
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and (p.suffix in (".safetensors", ".json") and "tokenizer" not in p.name):
            h.update(str(p.relative_to(model_dir)).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def export_command(
    run_dir: Path, fmt: str, quantize: str | None, output: Path | None, overwrite: bool, log: Any = print
) -> tuple[Path, dict[str, Any]]:
    """Check the arguments, then write the export directory; ``(directory, export.json contents)``."""
    from mtfuse.fusion.ensemble.members import is_ensemble_dir

    if fmt not in FORMATS:
        raise MtfuseError(f"--format '{fmt}': choose from [{', '.join(FORMATS)}]")
    if quantize is not None and quantize not in QUANTIZE:
        raise MtfuseError(f"--quantize '{quantize}': choose from [{', '.join(QUANTIZE)}]")
    if not run_dir.is_dir():
        raise MtfuseError(f"{run_dir}: no such directory (give a train or merge directory)")
    if is_ensemble_dir(run_dir):
        raise MtfuseError(
            f"{run_dir}: an ensemble or stack directory has no model of its own; export each member "
            "(`mtfuse serve --backend onnx` then serves the ensemble through its members' exports)"
        )
    if not rundir.looks_like_run(run_dir):
        raise MtfuseError(f"{run_dir}: not a run directory (no {rundir.CONFIG} and {rundir.MODEL}/)")
    out = output or run_dir / rundir.ONNX
    rundir.check_output(out, "export", overwrite)  # before loading anything
    meta: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        meta.update(export_onnx(run_dir, tmp, quantize, log))

    rundir.write_dir_atomic(out, "export", overwrite, fill)
    return out, meta


def export_onnx(run_dir: Path, out: Path, quantize: str | None, log: Any = print) -> dict[str, Any]:
    """Write model.onnx (+ model.int8.onnx), the tokenizer and export.json into ``out`` (an existing folder)."""
    import onnxruntime as ort

    from mtfuse.model import MultiTaskModel

    model_dir = run_dir / rundir.MODEL
    model, tokenizer = MultiTaskModel.load(model_dir, require_tokenizer=True)
    model.eval()
    # a generation task decodes token by token with its own decoder, which one graph of encoder + heads cannot
    # hold: it is left out (its model/hf/<task>/ copy is plain transformers, which optimum exports)
    left_out = {
        t: f"a generation task: `optimum-cli export onnx --model {_plain_copy(model_dir, t)} OUT` exports it"
        for t, spec in model.specs.items()
        if spec.task_type == "generation"
    }
    tasks = [t for t in model.tasks if t not in left_out]
    if not tasks:
        raise MtfuseError(
            f"{run_dir}: every task is a generation task, and one ONNX graph of the encoder and heads cannot "
            f"decode; {'; '.join(f'{t}: {why}' for t, why in left_out.items())}"
        )
    for t, why in left_out.items():
        log(f"{t}: left out of the graph ({why})")
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in model._encoder_inputs]
    wrapper = AllHeads(model, tasks, inputs).eval()
    multiple = row_multiple(model.specs)
    probe = _probe(tokenizer, inputs, 2 * multiple if multiple > 1 else 3)
    path = out / rundir.ONNX_MODEL
    started = time.perf_counter()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    onnx_log = logging.getLogger("torch.onnx")  # e.g. "torchvision is not installed" warnings
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(probe[k] for k in inputs),
                str(path),
                input_names=inputs,
                output_names=tasks,
                dynamic_shapes={k: {0: batch, 1: seq} for k in inputs},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter's errors are long; the first line of the cause says what failed
        text = str(e.__cause__ or e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise MtfuseError(f"{run_dir}: ONNX export failed: {first}") from e
    finally:
        onnx_log.setLevel(level)
    seconds = round(time.perf_counter() - started, 2)
    tokenizer.save_pretrained(out)
    model.encoder.config.save_pretrained(out)  # the encoder's config.json: what the tokenizer loader expects
    shutil.copyfile(model_dir / HEADS_JSON, out / HEADS_JSON)

    # parity on a second probe of another shape (not the one traced)
    check = _probe(tokenizer, inputs, 3 * multiple if multiple > 1 else 5, longer=True)
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(*(check[k] for k in inputs))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(tasks, {k: check[k].numpy() for k in inputs})
    parity = {t: float(np.abs(g - r).max()) for t, g, r in zip(tasks, got, ref, strict=True)}
    worst = max(parity.values())
    if worst > PARITY_TOLERANCE:
        log(f"warning: onnxruntime and torch logits differ by up to {worst:.2e} (> {PARITY_TOLERANCE})")

    files = {"fp32": rundir.ONNX_MODEL}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = logging.getLogger()  # quantize_dynamic logs a hint about pre-processing on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(path), str(out / rundir.ONNX_INT8), weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)
        files["int8"] = rundir.ONNX_INT8

    meta = {
        "format_version": EXPORT_VERSION,
        "format": "onnx",
        "files": files,
        "opset": OPSET,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "export_seconds": seconds,
        "inputs": [{"name": k, "dtype": "int64", "shape": ["batch", "sequence"]} for k in inputs],
        "outputs": [
            {
                "name": t,
                "task_type": model.specs[t].task_type,
                "shape": _output_shape(model.specs[t]),
                "rows_per_example": _rows_per_example(model.specs[t]),
                "labels": model.specs[t].labels,
            }
            for t in tasks
        ],
        "row_multiple": multiple,
        "heads": [model.specs[t].to_dict() for t in tasks],
        "parity_max_abs_diff": parity,
        "left_out": left_out,
        "source": {"run_dir": str(run_dir.resolve()), "model_fingerprint": model_fingerprint(model_dir)},
    }
    rundir.write_json(out / rundir.EXPORT, meta)
    return meta


def not_exported(task: str, why: str) -> MtfuseError:
    """The error for a task of the run that its ONNX export left out (``left_out`` in export.json)."""
    return MtfuseError(f"task '{task}' is not in the ONNX export ({why}); the torch backend has it")


def _plain_copy(model_dir: Path, task: str) -> str:
    """Where a generation task's model is as plain transformers loads it (what optimum exports)."""
    hf = model_dir / rundir.HF / task
    if hf.is_dir():
        return str(hf)
    if (model_dir / "generation_config.json").is_file():  # a shared decoder: model/ is the seq2seq model
        return str(model_dir)
    return f"{hf} (not written: the run had model.hf_copies false)"


def _output_shape(spec: HeadSpec) -> list[str | int]:
    if spec.head in ("token_classification", "masked_lm"):  # masked LM: every position (no mask in the graph)
        return ["batch", "sequence", spec.num_outputs]
    if spec.head == "multiple_choice":
        return [f"batch/{spec.num_outputs}", spec.num_outputs]
    if spec.head == "regression" and spec.num_outputs == 1:
        return ["batch"]
    return ["batch", spec.num_outputs]


def _probe(tokenizer: Any, inputs: list[str], rows: int, longer: bool = False) -> dict[str, Tensor]:
    words = "the film was a long and quiet story about a city by the sea".split()
    texts = [" ".join(words[: 3 + (i * (5 if longer else 2)) % len(words)]) for i in range(rows)]
    enc = tokenizer(texts, [t[::-1] for t in texts], padding=True, return_tensors="pt")
    return {k: enc[k] if k in enc else torch.zeros_like(enc["input_ids"]) for k in inputs}


# ------------------------------------------------------------------------------------- the ONNX backend


class OnnxModel:
    """An onnxruntime session that answers like a ``MultiTaskModel`` (``forward`` / ``forward_all`` /
    ``specs``), for ``mtfuse.predict.Predictor``. Only the requested tasks' outputs are computed."""

    training = False

    def __init__(self, directory: Path, int8: bool = False) -> None:
        import onnxruntime as ort

        self.dir = Path(directory)
        self.meta = read_export(self.dir)
        variant = "int8" if int8 else "fp32"
        if variant not in self.meta["files"]:
            raise MtfuseError(
                f"{self.dir}: no {variant} model in this export; run `mtfuse export RUN_DIR --format onnx "
                "--quantize int8 --overwrite`"
            )
        self.path = self.dir / self.meta["files"][variant]
        self.specs = {
            h["task"]: HeadSpec.from_dict(h, f"{self.dir / rundir.EXPORT} heads") for h in self.meta["heads"]
        }
        self.rows_per_example = {o["name"]: int(o["rows_per_example"]) for o in self.meta["outputs"]}
        self.multiple = int(self.meta["row_multiple"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch would use
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise MtfuseError(f"{self.path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from e
        self.inputs = [i.name for i in self.session.get_inputs()]

    @property
    def tasks(self) -> list[str]:
        return list(self.specs)

    @property
    def left_out(self) -> dict[str, str]:
        """Tasks of the run that the graph does not hold (generation), with where to export them."""
        return dict(self.meta.get("left_out") or {})

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise MtfuseError("an ONNX export cannot be trained; train the run directory it came from")
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self  # onnxruntime on the CPU

    def __call__(self, task: str, batch: dict[str, Tensor]) -> Tensor:
        return self.forward_all(batch, [task])[task]

    def forward(self, task: str, batch: dict[str, Tensor]) -> Tensor:
        return self(task, batch)

    def forward_all(self, batch: dict[str, Tensor], tasks: list[str]) -> dict[str, Tensor]:
        unknown = [t for t in tasks if t not in self.specs]
        if unknown:
            why = self.left_out.get(unknown[0])
            if why:
                raise not_exported(unknown[0], why)
            raise MtfuseError(f"unknown task '{unknown[0]}'; this model has tasks [{', '.join(self.specs)}]")
        ids = batch["input_ids"]
        feed = {
            k: (batch[k] if k in batch and batch[k] is not None else torch.zeros_like(ids)).cpu().numpy()
            for k in self.inputs
        }
        rows = ids.shape[0]
        pad = (-rows) % self.multiple
        if pad:  # multiple-choice heads group rows: pad with copies of the first row, drop their outputs
            feed = {k: np.concatenate([v, np.repeat(v[:1], pad, axis=0)]) for k, v in feed.items()}
        outs = self.session.run(list(tasks), feed)
        return {
            t: torch.from_numpy(np.ascontiguousarray(o[: rows // self.rows_per_example[t]]))
            for t, o in zip(tasks, outs, strict=True)
        }


def read_export(directory: Path) -> dict[str, Any]:
    path = directory / rundir.EXPORT
    if not path.is_file():
        raise MtfuseError(f"{directory}: no ONNX export ({rundir.EXPORT} missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != EXPORT_VERSION:
        raise MtfuseError(f"{path}: expected an export.json of format_version {EXPORT_VERSION}")
    for key in ("files", "heads", "outputs", "row_multiple", "source"):
        if key not in meta:
            raise MtfuseError(f"{path} (field '{key}'): missing")
    return meta


def load_onnx(run_dir: Path, int8: bool = False) -> tuple[OnnxModel, Any]:
    """``(OnnxModel, tokenizer)`` from ``RUN_DIR/onnx/``, refused when the run's model changed since."""
    from mtfuse.model import load_tokenizer

    directory = run_dir / rundir.ONNX
    if not (directory / rundir.EXPORT).is_file():
        raise MtfuseError(
            f"{run_dir}: no ONNX export in {directory}; run `mtfuse export {run_dir} --format onnx` first"
        )
    model = OnnxModel(directory, int8=int8)
    model_dir = run_dir / rundir.MODEL
    if model_dir.is_dir() and model_fingerprint(model_dir) != model.meta["source"].get("model_fingerprint"):
        raise MtfuseError(
            f"{directory}: the export is older than the run's model (retrained or merged again since); "
            f"run `mtfuse export {run_dir} --format onnx --overwrite`"
        )
    return model, load_tokenizer(str(directory))
