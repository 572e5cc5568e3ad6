"""`mtfuse finetune MTL_RUN --output DIR`: the MT-DNN recipe (Liu et al. 2019, "Multi-Task Deep Neural
Networks for Natural Language Understanding"): after multi-task training, fine-tune each task on its own,
starting from the multi-task encoder and that task's head.

Each task is an ordinary training run, ``DIR/<task>/``: the multi-task run's own config restricted to the task
(``only_tasks``), started from the run (``model.init_from``), with the command's ``key=value`` overrides
applied last, as ``mtfuse train`` takes them. One task has nothing to balance, so the run's sampler, loss
weighting and joint steps are reset to the single-task defaults (:data:`SINGLE_TASK`; overrides may set
them again).

Going beyond MT-DNN: the fine-tuned encoders all start from the same multi-task point, so they are merged
(``mtfuse merge``'s driver, task arithmetic by default) into one multi-head model ``DIR/merged/``, with the
multi-task encoder as the base of the task vectors, and scored on dev as ``mtfuse merge`` does.
``DIR/finetune.json`` records the three dev scores per task: multi-task, fine-tuned, merged.

A rerun resumes: a task whose run is finished (``results.json``) is skipped, an interrupted one continues
from its last checkpoint (``train --resume``), a merge of the same runs with the same request is kept.
``--overwrite`` trains and merges everything again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.config import RunConfig
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge.request import MergeRequest
from mtfuse.metrics import aggregate

MERGED = "merged"  # DIR/merged/: the merge of the fine-tuned runs
SUMMARY = "finetune.json"
NO_MERGE = "none"
COLUMNS = ("multi-task", "fine-tuned", "merged")

#: one task has nothing to balance: the multi-task run's sampler, loss weighting and joint steps over k tasks
#: do not carry over (joint_tasks=2 would not even be valid). The user's overrides come after these.
SINGLE_TASK = (
    "sampling={method: proportional}",
    "weighting={method: static}",
    "train.step_mode=sampled",
    "train.joint_tasks=null",
)


def task_overrides(mtl_run: Path, task: str, overrides: Sequence[str] = ()) -> list[str]:
    """The overrides that turn the multi-task run's config into ``task``'s fine-tuning config."""
    return [
        f"only_tasks=[{json.dumps(task)}]",  # JSON-quoted: a task named 'null' or '1' stays a string
        f"model.init_from={json.dumps(str(mtl_run.resolve()))}",
        *SINGLE_TASK,
        *overrides,
    ]


def read_mtl_run(mtl_run: Path) -> tuple[RunConfig, dict[str, dict[str, float]]]:
    """The multi-task run's config and dev metrics, after checking it can be fine-tuned from."""
    from mtfuse.training.init_from import read_init_source

    if not mtl_run.exists():
        raise MtfuseError(f"{mtl_run}: not found (MTL_RUN is the multi-task run directory to fine-tune from)")
    if not (mtl_run / rundir.CONFIG).is_file():
        raise MtfuseError(f"{mtl_run}: not a run directory (no {rundir.CONFIG})")
    read_init_source(mtl_run, field="MTL_RUN")  # a trained, hard-shared model in safetensors
    metrics = _tasks_of(mtl_run / rundir.METRICS, "is the multi-task run finished?")
    return rundir.load_run_config(mtl_run), metrics


def _tasks_of(path: Path, hint: str) -> dict[str, dict[str, float]]:
    """The per-task metrics of a ``metrics.json``."""
    if not path.is_file():
        raise MtfuseError(f"{path}: missing; {hint}")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks")
    except (ValueError, AttributeError) as e:
        raise MtfuseError(f"{path}: not a metrics file ({e})") from None
    if not isinstance(tasks, dict):
        raise MtfuseError(f"{path}: no per-task 'tasks' metrics")
    return tasks


def select_tasks(cfg: RunConfig, wanted: Sequence[str] | None, mtl_run: Path) -> list[str]:
    """``--tasks`` (default: every task of the run), in the run's order; unknown names are an error."""
    names = [t.name for t in cfg.tasks]
    if not wanted:
        chosen = names
    else:
        unknown = [t for t in wanted if t not in names]
        if unknown:
            raise ConfigError(
                f"--tasks: {mtl_run} has no task '{unknown[0]}'; choose from [{', '.join(names)}]"
            )
        chosen = [n for n in names if n in wanted]
    if MERGED in chosen:
        raise ConfigError(
            f"task '{MERGED}': its run would be {MERGED}/, where the merged model goes; rename it"
        )
    return chosen


def check_output_dir(output: Path, mtl_run: Path, overwrite: bool) -> None:
    """``output`` is new, empty, or an earlier finetune of the same multi-task run (which is resumed)."""
    rundir.check_output(output, "finetune", overwrite=True)  # refuses what another command or a user wrote
    recorded = rundir.mark_fields(output).get("mtl_run")
    if recorded is not None and Path(recorded) != mtl_run.resolve() and not overwrite:
        raise MtfuseError(
            f"{output}: holds the fine-tuned runs of {recorded}, not of {mtl_run}; choose another --output "
            "(or pass --overwrite to replace them)"
        )


def finetune_task(
    cfg: RunConfig,
    out: Path,
    task: str,
    overrides: Sequence[str],
    overwrite: bool,
    log: Callable[[str], None],
) -> str:
    """Train, resume or skip one task's run in ``out``; return which ("trained", "resumed", "skipped")."""
    from mtfuse import config as config_mod
    from mtfuse.train import train

    if (out / rundir.RESULTS).is_file() and not overwrite:
        log(f"{task}: {out} is finished ({rundir.RESULTS}); skipping it")
        return "skipped"
    ours = rundir.owner(out) == "train"
    if ours and (out / rundir.CHECKPOINTS).is_dir() and not overwrite:
        log(f"{task}: resuming {out} from its last checkpoint")
        train(config_mod.load(out / rundir.CONFIG, list(overrides)), out, resume=True)  # as train --resume
        return "resumed"
    restart = ours and not overwrite  # it stopped before its first checkpoint: nothing to resume or lose
    log(f"{task}: {'starting again' if restart else 'fine-tuning'} in {out} from {cfg.model.init_from}")
    train(cfg, out, overwrite=overwrite or restart)
    return "trained"


def merge_request(
    mtl_run: Path, runs: list[Path], method: str, params: dict[str, Any] | None = None
) -> MergeRequest:
    """The merge of the fine-tuned runs, with the multi-task encoder as the base of the task vectors."""
    request = MergeRequest.make(
        runs=runs, method=method, params=params or {}, base=str((mtl_run / rundir.MODEL).resolve())
    )
    request.merge_method().params(request.params)  # an unknown method or parameter: now, not after training
    return request


def keep_merge(request: MergeRequest, output: Path, overwrite: bool) -> bool:
    """Whether ``output`` already holds this very merge of finished runs (kept); refuse any other merge there
    unless ``overwrite``. Checked before training, so that nothing is trained for a merge that would stop."""
    from mtfuse.fusion.merge.request import read_request

    if overwrite or rundir.owner(output) != "merge":
        return False  # new, or replaced; anything but a merge output there is refused by the merge itself
    if read_request(output).model_dump(mode="json") != request.record(request.base):
        raise MtfuseError(
            f"{output}: holds a merge with another method, parameters or runs; pass --overwrite to replace "
            "it (or remove it)"
        )
    unfinished = [r for r in request.runs if not (r / rundir.RESULTS).is_file()]
    if unfinished:
        raise MtfuseError(
            f"{output}: merges {unfinished[0]}, which is not finished (no {rundir.RESULTS}): the merge would be "
            "stale once it is trained; remove it or pass --overwrite"
        )
    return True


def merge_finetuned(
    request: MergeRequest, output: Path, overwrite: bool, keep: bool, log: Callable[[str], None]
) -> None:
    """Merge with the merge command's driver (unless ``keep``: it is there already), then score it on dev."""
    from mtfuse.fusion.merge.command import run_request, score_merge

    if keep:
        log(f"{MERGED}: {output} already holds this merge; keeping it")
    else:
        log(f"{MERGED}: merging {len(request.runs)} fine-tuned runs with {request.method} into {output}")
        run_request(request, output, overwrite, log=log)
    if not (output / rundir.METRICS).is_file():
        score_merge(output)  # as `mtfuse merge`


def score_columns(
    mtl_metrics: dict[str, dict[str, float]], output: Path, tasks: list[str], merged: bool
) -> dict[str, dict[str, dict[str, float]]]:
    """Dev metrics per system (multi-task, fine-tuned, merged), each ``{task: {metric: value}}``."""
    fine: dict[str, dict[str, float]] = {}
    for t in tasks:
        fine[t] = _tasks_of(output / t / rundir.METRICS, "is its training finished?")[t]
    columns = {COLUMNS[0]: {t: mtl_metrics[t] for t in tasks if t in mtl_metrics}, COLUMNS[1]: fine}
    if merged:
        scored = _tasks_of(output / MERGED / rundir.METRICS, "was the merged model scored?")
        columns[COLUMNS[2]] = {t: scored[t] for t in tasks if t in scored}
    return columns


def finetune_command(
    mtl_run: str | Path,
    output: str | Path,
    tasks: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    merge_method: str = "task_arithmetic",
    merge_params: dict[str, Any] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Fine-tune ``tasks`` (default: all) of ``mtl_run`` into ``output/<task>/``, merge them into
    ``output/merged/`` (``merge_method``; ``"none"``: no merge) and return the summary written to
    ``output/finetune.json``: the dev metrics of each system per task and their averages.

    Every check (the run, the tasks, the overrides, the merge method and its parameters, the output) runs
    before any training."""
    from mtfuse import config as config_mod

    mtl_run, output = Path(mtl_run), Path(output)
    mtl_cfg, mtl_metrics = read_mtl_run(mtl_run)
    names = select_tasks(mtl_cfg, tasks, mtl_run)
    request = None
    if merge_method != NO_MERGE:
        try:
            request = merge_request(mtl_run, [output / t for t in names], merge_method, merge_params)
        except ConfigError as e:
            raise ConfigError(f"--merge-method {merge_method}: {e}") from None
    elif merge_params:
        raise ConfigError("--merge-param: there is no merge with --merge-method none")
    configs = {
        t: config_mod.load(mtl_run / rundir.CONFIG, task_overrides(mtl_run, t, overrides)) for t in names
    }
    check_output_dir(output, mtl_run, overwrite)
    keep = request is not None and keep_merge(request, output / MERGED, overwrite)
    with rundir.lock(output):
        output.mkdir(parents=True, exist_ok=True)
        rundir.mark(output, "finetune", mtl_run=str(mtl_run.resolve()))
        status = {}
        for t in names:  # one after the other: an interruption leaves the finished ones to skip
            status[t] = finetune_task(configs[t], output / t, t, overrides, overwrite, log)
        if request is not None:
            merge_finetuned(request, output / MERGED, overwrite, keep, log)
        columns = score_columns(mtl_metrics, output, names, request is not None)
        summary = {
            "mtl_run": str(mtl_run.resolve()),
            "tasks": names,
            "overrides": list(overrides),
            "merge": None if request is None else request.record(request.base),
            "runs": status,
            "metrics": columns,
            "average": {c: aggregate(m) for c, m in columns.items() if m},
        }
        rundir.write_json(output / SUMMARY, summary)
    return summary
