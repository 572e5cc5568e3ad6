"""THE owner of the run-directory contract (see DESIGN.md and the README's "Run directories").

Every file name a command writes, the one atomic directory writer, the one rule for writing over an existing
output (``--overwrite`` only replaces an output of the same command, never a user's files or another
command's output), the lock that keeps two processes off one output, and the check that names built from
data (task names) stay inside their directory.

Who wrote a directory is recorded in ``.mtfuse.json`` (``{"command": "train", ...}``). Directories written
before that marker existed are recognised by their files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtfuse.errors import MtfuseError

# ---- the files of the contract ---------------------------------------------------------------------
OWNER = ".mtfuse.json"  # which command wrote this directory
CONFIG = "config.yaml"  # the resolved run config (defaults included)
MODEL = "model"  # encoder (save_pretrained form) + heads.safetensors + heads.json + tokenizer files
HF = "hf"  # model/hf/<task>/: a generation task's own encoder-decoder, as plain transformers loads it
HEADS_JSON = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
METRICS = "metrics.json"  # dev metrics at the end of train / merge / ensemble
RESULTS = "results.json"  # what was run, metrics, cost: what compare reads
MODEL_CARD = "README.md"  # the model card (Hugging Face Hub style) of train, merge, ensemble, stack outputs
PREDICTIONS = "predictions"  # predictions/<task>.jsonl (dev), predictions/<split>/<task>.jsonl (evaluate)
CHECKPOINTS = "checkpoints"  # resumable training state
LOG = "log.jsonl"
TENSORBOARD = "tb"
BEST_MODEL = "best_model"
INIT = "init"  # a from-scratch encoder's initial weights (save_pretrained form): the common base of merges
MERGE = "merge.json"  # the merge request and its record (replay: mtfuse merge --from DIR/merge.json)
SEARCH = "search.json"
ENSEMBLE = "ensemble.json"  # an ensemble's or stack's members, method and fitted parameters
COMPARE = "compare.json"
AFFINITY = "affinity.json"  # `mtfuse affinity`: matrices, groupings, transfer map
REPORT = "report.html"  # `mtfuse report`: one self-contained page
ONNX = "onnx"  # `mtfuse export --format onnx`: RUN_DIR/onnx/ (model.onnx, model.int8.onnx, export.json, tokenizer)
ONNX_MODEL = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT = "export.json"  # what an export holds: inputs, outputs per task, head specs, the model it came from
PREVIOUS = ".previous-run"  # an old run moved aside by train --overwrite until the new one is written

TRAIN_FILES = (
    CONFIG,
    MODEL,
    CHECKPOINTS,
    METRICS,
    RESULTS,
    MODEL_CARD,
    PREDICTIONS,
    LOG,
    TENSORBOARD,
    BEST_MODEL,
    INIT,
)

#: The command families: an output of one may be replaced (--overwrite) only by the same family.
FAMILY = {
    "train": "train",
    "demo": "demo",  # a folder of runs (multi-task, single-task, merged, ensembled) and their comparison
    "merge": "merge",
    "ensemble": "ensemble",
    "stack": "ensemble",
    "compare": "compare",
    "affinity": "affinity",
    "report": "report",
    "export": "export",
    "finetune": "finetune",  # a folder of fine-tuned runs (one per task) and their merge
}


def metrics_file(split: str) -> str:
    """The metrics file ``mtfuse evaluate --split SPLIT`` writes in a run directory."""
    return f"metrics-{split}.json"


# ---- names built from data ---------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: object, where: str) -> str:
    """A task (or member) name that is safe as a file name: letters, digits, '-', '_', '.', no '..'."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name or len(name) > 200:
        raise MtfuseError(
            f"{where}: task name {name!r} is not allowed (letters, digits, '-', '_' and '.', "
            "starting with a letter or digit)"
        )
    return name


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` after checking that the result stays inside ``root``."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise MtfuseError(f"{path}: would be written outside {root}")
    return path


# ---- who wrote a directory ----------------------------------------------------------------------------


def owner(path: Path) -> str | None:
    """The command that wrote ``path`` (None: empty, missing, or not written by mtfuse)."""
    marker = path / OWNER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8"))["command"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    # written before the marker existed: recognise the files
    if (path / COMPARE).is_file():
        return "compare"
    if (path / EXPORT).is_file():
        return "export"
    if (path / ENSEMBLE).is_file():
        return "ensemble"
    if (path / MERGE).is_file():
        return "merge"
    if (path / ".mtfuse-demo").is_file():
        return "demo"
    if (path / CONFIG).is_file() and ((path / CHECKPOINTS).is_dir() or (path / MODEL).is_dir()):
        return "train"
    return None


def mark_fields(path: Path) -> dict[str, Any]:
    """What ``.mtfuse.json`` records besides the command (empty when absent or unreadable)."""
    try:
        raw = json.loads((path / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def mark(path: Path, command: str, **extra: Any) -> None:
    write_json(path / OWNER, {"command": command, **extra})


def looks_like_run(path: Path) -> bool:
    """A directory something can be loaded from: a trained or merged model (config + model)."""
    return (path / CONFIG).is_file() and (path / MODEL).is_dir()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_output(path: Path, command: str, overwrite: bool, resume: bool = False) -> None:
    """Refuse to write ``command``'s output to ``path`` unless it is new, empty, or (with ``--overwrite``, or
    ``--resume`` for train) an output of the same command. Only checks: nothing is changed."""
    if resume and overwrite:
        raise MtfuseError("--resume and --overwrite exclude each other")
    if path.exists() and not path.is_dir():
        raise MtfuseError(f"{path}: output path exists and is not a directory")
    if resume:
        if not (path / CHECKPOINTS).is_dir():
            raise MtfuseError(f"{path}: nothing to resume (no {CHECKPOINTS}/ folder)")
        return
    if not path.exists() or is_empty_dir(path):
        return
    found = owner(path)
    if found is None or FAMILY.get(found) != FAMILY[command]:
        what = f"an output of `mtfuse {found}`" if found else "files that mtfuse did not write"
        raise MtfuseError(
            f"{path}: holds {what}; `mtfuse {command}` writes only to a new or empty directory "
            f"or over its own output: choose another --output"
        )
    if not overwrite:
        if FAMILY[command] == "train":
            raise MtfuseError(
                f"{path}: already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        raise MtfuseError(
            f"{path}: already holds an output of `mtfuse {found}`; pass --overwrite to replace it"
        )


# ---- writing -------------------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename): a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, e) from None


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, e) from None


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, e) from None


def disk_error(path: Path, e: OSError) -> MtfuseError:
    if e.errno == errno.ENOSPC:
        return MtfuseError(f"{path}: no space left on the device; nothing was replaced, free space and rerun")
    return MtfuseError(f"{path}: cannot write: {e.strerror or e}")


def write_dir_atomic(output: Path, command: str, overwrite: bool, fill: Callable[[Path], None]) -> None:
    """Write a whole output directory through ``fill(tmp)`` beside ``output``, then rename it into place: a
    failure leaves no partial output, and an old output (of the same command) intact until the new is done."""
    check_output(output, command, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    with lock(output):
        tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            fill(tmp)
            mark(tmp, command)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        check_output(output, command, overwrite)  # nothing else appeared there meanwhile
        if output.exists():
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            os.replace(output, old)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)


def stash_previous(path: Path) -> None:
    """train --overwrite: move the old run's files into ``PREVIOUS`` (restored if the new run fails early,
    dropped when it is written), so no check or crash of the new run can lose the old one."""
    stash = path / PREVIOUS
    if stash.exists():
        shutil.rmtree(stash)
    stash.mkdir()
    for n in (*TRAIN_FILES, OWNER):
        p = path / n
        if p.exists():
            os.replace(p, stash / n)


def restore_previous(path: Path) -> None:
    stash = path / PREVIOUS
    if not stash.is_dir():
        return
    for n in TRAIN_FILES:
        p = path / n
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in stash.iterdir():
        os.replace(p, path / p.name)
    stash.rmdir()


def drop_previous(path: Path) -> None:
    shutil.rmtree(path / PREVIOUS, ignore_errors=True)


# ---- one process per output ----------------------------------------------------------------------------


@contextlib.contextmanager
def lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` (a file beside it, so that it survives the directory being
    replaced); fail at once, naming the other process, if another mtfuse process holds it."""
    import fcntl

    output.parent.mkdir(parents=True, exist_ok=True)
    path = output.parent / f".{output.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise MtfuseError(
                f"{output}: another mtfuse process (pid {other}) is writing this directory; "
                "wait for it to finish or choose another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---- reading -------------------------------------------------------------------------------------------


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    from mtfuse import config as config_mod

    if not (run_dir / CONFIG).is_file():
        raise MtfuseError(f"{run_dir}: not a run directory (no {CONFIG})")
    return config_mod.load(run_dir / CONFIG, overrides)


def check_evaluate_output(run_dir: Path, output: Path) -> None:
    """`evaluate --output` writes one metrics JSON file: never a directory, never a file of the contract."""
    if output.is_dir():
        raise MtfuseError(f"{output}: --output is a directory; give a file name such as metrics-test.json")
    reserved = {
        CONFIG,
        RESULTS,
        METRICS,
        MODEL_CARD,
        OWNER,
        MERGE,
        ENSEMBLE,
        COMPARE,
        HEADS_JSON,
        SEARCH,
        LOG,
    }
    parent = output.resolve().parent
    if (
        output.name in reserved
        or output.suffix in (".safetensors", ".yaml")
        or parent.name in (MODEL, CHECKPOINTS)
    ):
        raise MtfuseError(f"{output}: is a file of a run directory's contract; choose another --output")
    if (
        output.exists()
        and output.resolve().parent == run_dir.resolve()
        and not output.name.startswith("metrics-")
    ):
        raise MtfuseError(
            f"{output}: exists in the run directory and is not a metrics file; choose another --output"
        )
