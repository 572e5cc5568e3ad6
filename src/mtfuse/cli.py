"""`mtfuse` command line: train, finetune, evaluate, predict, ensemble, stack, diversity, compare, report, merge,
affinity, data check, demo, serve, export.

Every user error (bad config, bad data, existing output) is one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtfuse.errors import MtfuseError
from mtfuse.training.signals import Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inspect task data without training.")
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

OVERRIDES = typer.Argument(
    None, help="dotted key=value overrides, e.g. train.lr=1e-4 data_dir=../shared/data"
)


def metrics_table(
    title: str,
    metrics: dict[str, dict[str, float]],
    baseline: dict[str, dict[str, float]] | None = None,
    average: float | None = None,
) -> Table:
    columns = {"score": metrics, **({"majority baseline": baseline} if baseline is not None else {})}
    return scores_table(title, columns, {"score": average} if average is not None else None)


def scores_table(
    title: str,
    columns: dict[str, dict[str, dict[str, float]]],
    averages: dict[str, float] | None = None,
) -> Table:
    """One row per task and metric, one column per system (``columns[name][task][metric]``; blank where a
    system lacks the task), and an average row when ``averages`` is given."""
    table = Table(title=title)
    table.add_column("task")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    rows: dict[tuple[str, str], None] = {}  # (task, metric) in first-seen order
    for per_task in columns.values():
        for task, ms in per_task.items():
            rows.update({(task, m): None for m in ms})
    for task, m in rows:
        cells = [c.get(task, {}).get(m) for c in columns.values()]
        table.add_row(task, m, *("" if v is None else f"{v:.2f}" for v in cells))
    if averages is not None:
        cells = [averages.get(name) for name in columns]
        table.add_row("average", "", *("" if v is None else f"{v:.2f}" for v in cells))
    return table


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config"),
    overrides: list[str] = OVERRIDES,
    output: Path = typer.Option(None, "--output", "-o", help="run directory (default runs/<config name>)"),
    resume: bool = typer.Option(
        False, "--resume", help="continue the run in --output from its last checkpoint"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in --output"),
) -> None:
    """Train one model on every task of CONFIG."""
    from mtfuse import config as config_mod
    from mtfuse.train import train as run_train

    out = output or Path("runs") / config.stem
    if resume and (out / "config.yaml").is_file():
        cfg = config_mod.load(
            out / "config.yaml", overrides or []
        )  # resume what was run, not the edited file
    else:
        cfg = config_mod.load(config, overrides or [])
    final = run_train(cfg, out, resume=resume, overwrite=overwrite)
    if final:
        console.print(metrics_table(f"dev metrics ({out})", final["tasks"], average=final["average"]))
        console.print(f"run directory: {out}")


@app.command()
def finetune(
    mtl_run: Path = typer.Argument(..., help="a multi-task run directory written by train"),
    overrides: list[str] = OVERRIDES,
    output: Path = typer.Option(
        ..., "--output", "-o", help="directory for one run per task (DIR/<task>) and DIR/merged"
    ),
    tasks: list[str] = typer.Option(
        None, "--tasks", help="tasks to fine-tune (repeat, or comma-separate); default: all of MTL_RUN's"
    ),
    merge_method: str = typer.Option(
        "task_arithmetic",
        "--merge-method",
        help="merge the fine-tuned encoders (base: MTL_RUN's encoder) with this merge method; none: skip",
    ),
    merge_params: list[str] = typer.Option(
        None, "--merge-param", help="a parameter of the merge method as key=value (repeat), e.g. scale=0.5"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="train and merge again over an earlier finetune"
    ),
) -> None:
    """MT-DNN (Liu et al. 2019): fine-tune each task of a multi-task run from its encoder and that task's head,
    merge the fine-tuned encoders into one model, and score the three on dev.

    Overrides change the fine-tuning (train.lr=2e-5 train.epochs=2). A rerun skips finished tasks and resumes
    an interrupted one."""
    from mtfuse.finetune import SUMMARY, finetune_command
    from mtfuse.fusion.ensemble.members import split_names
    from mtfuse.fusion.merge.request import parse_params

    summary = finetune_command(
        mtl_run,
        output,
        split_names(tasks),
        overrides or [],
        merge_method,
        parse_params(merge_params or []),
        overwrite,
        log=lambda m: console.print(m, markup=False, highlight=False),
    )
    console.print(scores_table(f"dev metrics ({output})", summary["metrics"], summary["average"]))
    console.print(f"fine-tuned runs in {output}/<task>; summary {output / SUMMARY}", markup=False)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by train"),
    overrides: list[str] = OVERRIDES,
    split: str = typer.Option(
        "dev",
        help="split to score: train, dev, test, or train-holdout (train rows outside the run's subset.train)",
    ),
    output: Path = typer.Option(None, help="metrics JSON (default RUN_DIR/metrics-<split>.json)"),
) -> None:
    """Score a trained run on a split and print a table."""
    from mtfuse import rundir
    from mtfuse.evaluate import evaluate_run

    if output is not None:
        rundir.check_evaluate_output(run_dir, output)  # never onto the run's own files
    result, out = evaluate_run(run_dir, split, overrides or [], output)
    console.print(metrics_table(f"{split} metrics ({run_dir})", result["tasks"], average=result["average"]))
    counts = ", ".join(f"{n}: {k}" for n, k in result["examples"].items())
    console.print(f"examples scored ({split}): {counts}")
    console.print(f"wrote {out}")


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="a run directory written by train"),
    task: str = typer.Option(..., help="task name"),
    input: Path = typer.Option(
        ..., "--input", help="jsonl / csv / tsv / parquet with the task's text fields"
    ),
    output: Path = typer.Option(..., "--output", help="JSONL with labels and probabilities"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output file"),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32; bf16 (autocast: ~1.8x on a CPU with native bf16, a few labels may change); "
        "auto (bf16 on such a CPU for label decisions, else fp32)",
    ),
    overrides: list[str] = OVERRIDES,
) -> None:
    """Predict labels (and probabilities) for new inputs; overrides change settings such as decoding
    (tasks.NAME.generation.num_beams=4)."""
    from mtfuse.predict import Predictor
    from mtfuse.rundir import write_jsonl

    if output.exists() and not overwrite:
        raise MtfuseError(f"{output}: already exists; pass --overwrite to replace it")
    if not input.is_file():
        raise MtfuseError(f"{input}: input file not found")
    from mtfuse.fusion.ensemble.members import is_ensemble_dir

    if is_ensemble_dir(run_dir):
        from mtfuse.fusion.ensemble import EnsemblePredictor

        recs = EnsemblePredictor(run_dir, precision=precision).predict_file(task, input)
    else:
        recs = Predictor(run_dir, overrides=overrides or [], precision=precision).predict_file(task, input)
    write_jsonl(output, recs)
    console.print(f"wrote {len(recs)} predictions to {output}")


TASKS_OPT = typer.Option(
    None, "--tasks", help="tasks to use (repeat, or comma-separate); default: all shared"
)


@app.command()
def ensemble(
    run_dirs: list[Path] = typer.Argument(
        ..., help="run directories (or ensemble directories) sharing tasks"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="ensemble directory to write"),
    tasks: list[str] = TASKS_OPT,
    method: str = typer.Option(
        "mean",
        help="mean | soft_vote | vote | weighted_nll | weighted_metric | caruana | caruana_bagged | stack",
    ),
    folds: int = typer.Option(5, help="k of the k-fold cross-validation that tunes and scores tuned methods"),
    seed: int = typer.Option(0, help="seed of the fold shuffle (and of weighted_metric's random search)"),
    features: str = typer.Option("probs", help="stack inputs: probs (probs+pooled: not available)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing ensemble directory"),
) -> None:
    """Fuse runs' dev predictions per task; tuned methods are scored out-of-fold (k-fold on dev)."""
    from mtfuse.fusion.ensemble import ensemble_command

    ensemble_command(run_dirs, output, tasks or None, method, folds, seed, features, overwrite, console)


@app.command()
def stack(
    run_dirs: list[Path] = typer.Argument(
        ..., help="run directories (or ensemble directories) sharing tasks"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="stack directory to write"),
    tasks: list[str] = TASKS_OPT,
    folds: int = typer.Option(5, help="k of the outer k-fold cross-validation (scores are out-of-fold)"),
    seed: int = typer.Option(0, help="seed of the fold shuffles"),
    features: str = typer.Option("probs", help="meta-learner inputs: probs (probs+pooled: not available)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing stack directory"),
) -> None:
    """Stacking: a logistic / ridge meta-learner on the members' dev probabilities (= ensemble --method stack)."""
    from mtfuse.fusion.ensemble import ensemble_command

    ensemble_command(run_dirs, output, tasks or None, "stack", folds, seed, features, overwrite, console)


@app.command()
def diversity(
    run_dirs: list[Path] = typer.Argument(..., help="candidate ensemble members"),
    tasks: list[str] = TASKS_OPT,
    output: Path = typer.Option(None, "--output", "-o", help="also save the report as this JSON file"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --output file"),
) -> None:
    """Pairwise disagreement and error correlation of candidate members, per task."""
    from mtfuse.fusion.ensemble.diversity import diversity_command

    diversity_command(run_dirs, tasks or None, output, overwrite, console)


@app.command()
def compare(
    paths: list[Path] = typer.Argument(
        ..., help="run / ensemble dirs, results JSON files, or folders of runs"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="directory for compare.json, compare.md, plots/"),
    latency: int = typer.Option(
        0, help="time inference on this many dev inputs per task (batch 1 and 32); 0 (default): skip"
    ),
    device: str = typer.Option(None, help="device for the latency measurement (default: cuda if available)"),
    reference: str = typer.Option(
        "mean", help="normalise each task to the mean or the best of its single-task runs (mean|best)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing comparison directory"),
) -> None:
    """Single-task runs, multi-task runs, ensembles, stacks and merged models side by side (never retrains)."""
    from mtfuse.compare import compare_command

    if reference not in ("mean", "best"):
        raise MtfuseError(f"--reference '{reference}': choose from [best, mean]")
    compare_command(paths, output, latency, overwrite, device, console, reference=reference)


@app.command()
def report(
    paths: list[Path] = typer.Argument(
        ...,
        help="run / merge / ensemble / stack dirs, results JSON files, compare or affinity dirs, or folders",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="directory for report.html"),
    reference: str = typer.Option(
        None, help="normalise to the mean or the best single-task run (default: the compare dir's, else mean)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report directory"),
) -> None:
    """One self-contained HTML page: comparison tables, per-task bars, quality vs cost, learning curves,
    gradient conflicts and task affinity (inline SVG; opens offline; never retrains)."""
    from mtfuse.html_report import report_command

    notes = report_command(paths, output, overwrite, reference)
    for n in notes:
        console.print(f"note: {n}", markup=False, highlight=False)
    console.print(f"report written to {output / 'report.html'}", markup=False, highlight=False)


@app.command()
def affinity(
    config: Path = typer.Argument(..., help="YAML config with the candidate tasks"),
    overrides: list[str] = OVERRIDES,
    output: Path = typer.Option(
        ..., "--output", "-o", help="directory for affinity.json, heatmaps, groupings/"
    ),
    steps: int = typer.Option(None, help="joint steps of the short run (default train.max_steps, else 100)"),
    every: int = typer.Option(1, help="measure every this many steps (TAG: every step)"),
    top: int = typer.Option(3, help="groupings listed per budget k"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing affinity directory"),
) -> None:
    """Which tasks to train together: inter-task affinity (TAG lookahead), gradient cosines, recommended
    groupings for every budget of k models (each as a ready config) and a transfer map."""
    from mtfuse import config as config_mod
    from mtfuse import rundir
    from mtfuse.affinity.run import measure, recommend, write

    cfg = config_mod.load(config, overrides or [])
    rundir.check_output(output, "affinity", overwrite)  # refuse now, before the run
    result = measure(cfg, steps, every, progress=cfg.train.progress)
    result.update(recommend(result, top))
    write(result, output, overwrite)
    names = result["tasks"]
    table = Table(
        title=f"affinity: a step on the row task changes the column task's loss ({result['measured_steps']} steps)"
    )
    table.add_column("step on")
    for n in names:
        table.add_column(n, justify="right")
    for i, n in enumerate(names):
        table.add_row(n, *[("" if i == j else f"{result['affinity'][i][j]:+.4f}") for j in range(len(names))])
    console.print(table)
    for n, t in result["transfer"].items():
        helped = ", ".join(f"{p} {v:+.4f}" for p, v in t["helped_by"]) or "none"
        hurt = ", ".join(f"{p} {v:+.4f}" for p, v in t["hurt_by"]) or "none"
        console.print(f"{escape(n)}: helped by {escape(helped)}; hurt by {escape(hurt)}")
    for k, options in result["groupings"].items():
        best = options[0]
        groups = " | ".join(", ".join(g) for g in best["groups"])
        console.print(f"k={k}: {escape(groups)}  (predicted affinity {best['predicted_affinity']:+.4f})")
    console.print(f"wrote {output}/ (configs for the best grouping of each k in {output}/groupings/)")


@data_app.command("check")
def data_check(
    config: Path = typer.Argument(..., help="YAML config"),
    overrides: list[str] = OVERRIDES,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Read, check and tokenise every task's data; print sizes, labels and lengths per split.

    Labels seen in dev or test but not in train (which train and evaluate refuse) are a warning here, so
    that the whole report can still be shown."""
    from mtfuse import config as config_mod
    from mtfuse.model import load_tokenizer
    from mtfuse.model.encoder import load_encoder_config
    from mtfuse.plan import check_data, check_encoder, make_plan
    from mtfuse.tasks.prepare import describe_split, examples_with, prepare_tasks, task_splits
    from mtfuse.tasks.types import TASK_TYPES

    cfg = config_mod.load(config, overrides or [])  # the plan step's checks run here
    check_encoder(
        cfg, load_encoder_config(cfg.model.name_or_path, cfg.model.lstm)
    )  # e.g. max_length past the positions
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.lstm)
    report: dict[str, Any] = {}
    labels: dict[str, list[str] | None] = {}
    unseen: dict[str, dict[str, list[str]]] = {}
    for tc in cfg.tasks:
        splits = task_splits(tc)
        one = cfg.model_copy(update={"tasks": [tc]})
        task = prepare_tasks(one, tokenizer, splits, unseen=unseen)[tc.name]
        report[tc.name] = {s: describe_split(task, s) for s in splits}
        labels[tc.name] = task.labels
        for s, labs in unseen.get(tc.name, {}).items():
            report[tc.name][s]["unseen_in_train"] = labs
            report[tc.name][s]["examples_with_unseen"] = examples_with(task, s, labs)
    check_data(make_plan(cfg), labels)  # metrics that need the label set (binary F1 on three classes)
    warnings = []
    for tc in cfg.tasks:
        for s, labs in unseen.get(tc.name, {}).items():
            shown = ", ".join(labs[:10]) + (f", ... ({len(labs)} in all)" if len(labs) > 10 else "")
            where = f"tasks.{tc.name}.labels" if tc.labels is not None else "train"
            n = report[tc.name][s]["examples_with_unseen"]
            note = TASK_TYPES.get(tc.type).unseen_labels_note(tc)
            what = note or (
                f"train and evaluate refuse them (add them to tasks.{tc.name}.labels, or drop those rows)"
            )
            warnings.append(
                f"warning: task '{tc.name}': {s} has {len(labs)} label(s) not in {where}: [{shown}] "
                f"({n} example(s)); {what}"
            )
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        _data_check_tables(str(config), report, unseen)
    for w in warnings:
        err_console.print(w, style="yellow", markup=False, highlight=False, soft_wrap=True, emoji=False)


def _target_table(report: dict[str, Any]) -> None:
    """Generation tasks: target lengths in tokens and how many targets max_target_length cuts."""
    rows = [(n, s, i) for n, splits in report.items() for s, i in splits.items() if "target_tokens_mean" in i]
    if not rows:
        return
    table = Table(title="targets (generation tasks)")
    table.add_column("task", overflow="fold")
    table.add_column("split")
    for col in ("tokens mean", "p95", "max", "truncated"):
        table.add_column(col, justify="right")
    for name, s, info in rows:
        keys = ("target_tokens_mean", "target_tokens_p95", "target_tokens_max", "targets_truncated")
        table.add_row(name, s, *(str(info[k]) for k in keys))
    console.print(table)


def _masked_table(report: dict[str, Any]) -> None:
    """Masked-LM tasks: the tokens that may be masked (not special) and those the split's fixed masks chose."""
    rows = [(n, s, i) for n, splits in report.items() for s, i in splits.items() if "masked_tokens" in i]
    if not rows:
        return
    table = Table(title="masked tokens (masked_lm tasks, fixed masks)")
    table.add_column("task", overflow="fold")
    table.add_column("split")
    for col in ("maskable", "masked", "share"):
        table.add_column(col, justify="right")
    for name, s, info in rows:
        keys = ("maskable_tokens", "masked_tokens", "masked_share")
        table.add_row(name, s, *(str(info[k]) for k in keys))
    console.print(table)


def _data_check_tables(title: str, report: dict[str, Any], unseen: dict[str, Any]) -> None:
    # One narrow table of sizes (fits 80 columns), then one table of label counts per task: label names can
    # be long and many (BIO tags), so they get rows of their own instead of a squeezed cell.
    table = Table(title=f"data check ({escape(title)})")
    table.add_column("task", overflow="fold")
    table.add_column("split")
    for col in ("examples", "labels", "tokens mean", "p95", "max", "truncated"):
        table.add_column(col, justify="right")
    for name, splits in report.items():
        for s, info in splits.items():
            if "range" in info:
                low, high = info["range"]
                lab_s = f"{low:g} to {high:g}"
            else:
                lab_s = str(len(info.get("labels", {}))) if "labels" in info else ""
            table.add_row(
                name,
                s,
                str(info["examples"]),
                lab_s,
                str(info["tokens_mean"]),
                str(info["tokens_p95"]),
                str(info["tokens_max"]),
                str(info["truncated"]),
            )
    console.print(table)
    _target_table(report)
    _masked_table(report)
    for name, splits in report.items():
        counted = {s: info["labels"] for s, info in splits.items() if "labels" in info}
        if not counted:
            continue
        train = set(counted.get("train", {}))
        names = sorted({lab for labs in counted.values() for lab in labs})
        labels = Table(
            title=f"labels of task '{escape(name)}'" + (" (* = not in train)" if unseen.get(name) else "")
        )
        labels.add_column("label", overflow="fold")
        for s in counted:
            labels.add_column(s, justify="right")
        for lab in names:
            mark = "*" if train and lab not in train else ""
            labels.add_row(mark + escape(lab), *(str(counted[s].get(lab, 0)) for s in counted))
        console.print(labels)


@app.command()
def merge(
    inputs: list[str] = typer.Argument(
        None, help="run directories to merge, then method parameters as key=value"
    ),
    method: str = typer.Option(None, "--method", "-m", help="merge method (listed in `mtfuse merge --help`)"),
    output: Path = typer.Option(
        None, "--output", "-o", help="run directory to write (with --from: default the recorded merge's)"
    ),
    base: str = typer.Option(None, help="base (pretrained) model; default: the runs' model.name_or_path"),
    weights: str = typer.Option(None, help="per-model weights, comma separated (default: equal)"),
    seed: int = typer.Option(
        None, help="seed of random methods (DARE, DELLA), Fisher label sampling, searches [default: 0]"
    ),
    max_distance: float = typer.Option(
        None, help="refuse inputs further than this (relative L2) from the base [default: 0.5]"
    ),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="score the merged model on dev"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier merge output"),
    search: bool = typer.Option(
        False, "--search", help="tune the method's hyperparameters on --search-split (grid search)"
    ),
    search_space: str = typer.Option(
        None,
        "--search-space",
        help="e.g. 'scale=[0.3,0.5,0.7,1.0] density=[0.2,0.5]' or 'weights=[[1,1],[2,1]]' (implies --search)",
    ),
    search_split: str = typer.Option(
        None, "--search-split", help="select on dev (optimistic) or train-holdout (train rows not seen)"
    ),
    search_trials: int = typer.Option(
        None, "--search-trials", help="score a seeded random N points of the grid instead of all of them"
    ),
    replay: Path = typer.Option(
        None, "--from", help="replay the request recorded in a merge's merge.json (or its directory)"
    ),
) -> None:
    """Merge the encoders of fine-tuned runs into one model that keeps every run's task heads.

    Methods: tensor-only (linear, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties,
    della, della_linear, slerp, nuslerp, multislerp, karcher, model_stock, sce, tsv_m, iso_c, iso_cts, wudi) and
    data-dependent (fisher, regmean, adamerging, greedy_soup: they read the runs' data).
    `--from DIR/merge.json [--output NEW]` merges again what DIR records, with identical weights."""
    from mtfuse.errors import ConfigError
    from mtfuse.fusion.merge.command import run_request
    from mtfuse.fusion.merge.request import MergeRequest, SearchSpec, parse_params, read_request
    from mtfuse.fusion.merge.search import default_space, parse_space

    if replay is not None:
        given = {
            "run directories or key=value parameters": inputs,
            "--method": method,
            "--base": base,
            "--weights": weights,
            "--seed": seed,
            "--max-distance": max_distance,
            "--search": search or None,
            "--search-space": search_space,
            "--search-split": search_split,
            "--search-trials": search_trials,
        }
        extra = [k for k, v in given.items() if v]
        if extra:
            raise ConfigError(f"--from replays a recorded merge request; drop {', '.join(extra)}")
        request = read_request(replay)
        output = output or (replay if replay.is_dir() else replay.parent)
    else:
        if not inputs:
            raise ConfigError("give the run directories to merge (or --from DIR/merge.json)")
        if method is None:
            raise ConfigError("--method is required (or --from DIR/merge.json)")
        if output is None:
            raise ConfigError("--output is required")
        spec = None
        if search or search_space or search_split or search_trials:
            from mtfuse.fusion.merge.method import get_method

            space = parse_space(search_space) if search_space else default_space(get_method(method))
            spec = SearchSpec(space=space, split=search_split or "dev", trials=search_trials)
        request = MergeRequest.make(
            runs=[Path(i) for i in inputs if "=" not in i],
            method=method,
            params=parse_params([i for i in inputs if "=" in i]),
            base=base,
            weights=[float(x) for x in weights.split(",")] if weights else None,
            seed=seed if seed is not None else 0,
            max_distance=max_distance if max_distance is not None else 0.5,
            search=spec,
        )
    record, slog = run_request(request, output, overwrite, log=console.print)
    if slog is not None:
        best = " ".join(f"{k}={v}" for k, v in slog["best"]["point"].items())
        console.print(
            f"search: {len(slog['points'])} points on {slog['split']}; selected {best} "
            f"(average {slog['best']['average']:.2f}); log {output / 'search.json'}, "
            f"plot {output / 'search.png'}"
        )
        if slog["split"] == "dev":
            console.print("note: selected on dev, so the dev scores below are optimistic", style="yellow")
    runs = request.runs
    dist = ", ".join(f"{Path(k).name}: {v:.4f}" for k, v in record["distance_to_base"].items())
    console.print(
        f"merged {len(runs)} runs with {request.method} into {output} ({record['merge_seconds']} s)"
    )
    if dist:
        console.print(f"distance to base (relative L2): {dist}")
    info = record.get("stats", {})
    if info.get("kind") == "soup":
        console.print(f"greedy soup of {len(info['soup'])}/{len(runs)} runs: {', '.join(info['soup'])}")
        heads = ", ".join(f"{t} from {r}" for t, r in record["heads"].items())
        console.print(f"one head per task kept: {heads}")
    if evaluate:
        from mtfuse.fusion.merge.command import score_merge

        result = score_merge(output)
        console.print(metrics_table(f"dev metrics ({output})", result["tasks"], average=result["average"]))


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="a train, merge, ensemble or stack directory"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port (0: any free port)"),
    max_batch: int = typer.Option(32, help="rows per model call, across requests (1: no dynamic batching)"),
    max_wait_ms: float = typer.Option(5.0, help="how long to wait for more requests to fill a batch"),
    max_queue: int = typer.Option(256, help="requests waiting for the model; past it: 503 + Retry-After"),
    max_inputs: int = typer.Option(256, help="inputs per request; past it: 413"),
    max_body_bytes: int = typer.Option(1_000_000, help="request body size; past it: 413"),
    backend: str = typer.Option("torch", help="torch | onnx | onnx-int8 (onnx: needs `mtfuse export` first)"),
    device: str = typer.Option(None, help="torch device (default: cuda if available)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | auto (as `mtfuse predict --precision`)"),
    threads: int = typer.Option(None, help="CPU threads of the model (default: torch's)"),
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, /v1/predict_all; GET /v1/tasks, /health, /ready,
    /metrics, /docs."""
    from mtfuse.serve import ServeSettings, serve_command

    settings = ServeSettings(
        host=host,
        port=port,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_inputs=max_inputs,
        max_body_bytes=max_body_bytes,
        backend=backend,
        device=device,
        precision=precision,
        threads=threads,
    )
    serve_command(run_dir, settings, log=lambda m: console.print(m, markup=False, highlight=False))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a train or merge directory"),
    format: str = typer.Option("onnx", "--format", help="onnx"),
    quantize: str = typer.Option(None, "--quantize", help="also write an int8 model (int8)"),
    output: Path = typer.Option(None, "--output", "-o", help="export directory (default RUN_DIR/onnx)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier export"),
) -> None:
    """Export the encoder and every head as one ONNX graph (dynamic batch and sequence axes)."""
    from mtfuse.export import export_command

    out, meta = export_command(run_dir, format, quantize, output, overwrite, log=console.print)
    worst = max(meta["parity_max_abs_diff"].values())
    files = ", ".join(meta["files"].values())
    console.print(f"wrote {out} ({files}); outputs: {', '.join(o['name'] for o in meta['outputs'])}")
    console.print(f"max |logit difference| torch vs onnxruntime (fp32): {worst:.1e}")


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="folder for the demo's runs"),
    overrides: list[str] = OVERRIDES,
) -> None:
    """Offline, on two real-text tasks (BBC News) and the packaged MiniLM: one multi-task model vs single-task
    runs, their merge and ensembles, side by side with their cost; writes an HTML report."""
    from mtfuse.demo import run_demo

    run_demo(output, overrides or [], console)


def _quiet_libraries() -> None:
    """Our own progress bar is enough: silence the HF weight-loading bars and their info logs."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> None:
    from mtfuse.invocation import running

    _quiet_libraries()
    try:
        with running(sys.argv[1:] if argv is None else argv):  # results.json and model cards record it
            app(args=argv, standalone_mode=False)
    except Interrupted as e:
        err_console.print(escape(str(e)), highlight=False, soft_wrap=True, emoji=False)
        sys.exit(130)
    except MtfuseError as e:
        # plain text, not markup: a "[a, b]" list of choices must not be taken for a style tag and dropped
        message = escape(str(e))
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, emoji=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):  # click turns Ctrl-C into Abort
            err_console.print("interrupted")
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
