"""`mtfuse ensemble` / `mtfuse stack`: fuse members' dev predictions per task and write a run-like
directory (``ensemble.json``, ``metrics.json``, ``results.json``, ``predictions/<task>.jsonl``,
``diversity.json``, the model card ``README.md``) atomically through ``mtfuse.rundir``."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.fusion.ensemble import stack as stack_mod
from mtfuse.fusion.ensemble.members import Member, load_all, metrics_record, split_names
from mtfuse.fusion.ensemble.methods import METHODS, TuningOptions
from mtfuse.fusion.ensemble.protocol import TaskFusion, check_folds, fuse_task, protocol_text
from mtfuse.fusion.ensemble.texts import fuse_texts
from mtfuse.invocation import command_line
from mtfuse.model_card import write_card

DIVERSITY = "diversity.json"


def _sum_cost(members: list[Member]) -> dict[str, Any]:
    """An ensemble's cost: every member is trained and run, so parameters, training time and (members held
    together to predict) peak memory add up."""
    out: dict[str, Any] = {"members": len(members)}
    for key in ("parameters", "train_seconds", "peak_memory_mb"):
        vals = [((m.results or {}).get("cost") or {}).get(key) for m in members]
        out[key] = None if any(v is None for v in vals) else round(float(sum(vals)), 2)
        if key == "parameters" and out[key] is not None:
            out[key] = int(out[key])
    return out


def _member_record(m: Member) -> dict[str, Any]:
    return {"path": str(m.path.resolve()), "kind": m.kind}


@dataclass
class Fusion:
    """An ensemble or stack, computed and not yet written."""

    method: str
    members: list[Member]
    tasks: dict[str, TaskFusion]
    folds: int
    seed: int
    features: str
    diversity: dict[str, Any]

    @property
    def kind(self) -> str:
        return "stack" if self.method == "stack" else "ensemble"

    def metrics(self) -> dict[str, Any]:
        return metrics_record({t: f.metrics for t, f in self.tasks.items()})

    def spec(self) -> dict[str, Any]:
        """``ensemble.json``: members, method, protocol, and per task the parameters predict uses."""
        tasks = {}
        for name, f in self.tasks.items():
            rec: dict[str, Any] = {
                "type": f.ta.type.name,
                "labels": f.ta.labels,
                "metrics": f.ta.metrics,
                "method": f.method,
                # text tasks (generation) are fused by MBR selection, which tunes nothing
                "tuned": False if f.ta.type.fused_as_text else METHODS.get(f.method).tuned,
                "params": f.params,
                "weights": f.params.get("weights"),
                "fold_weights": [p["weights"] for p in f.fold_params]
                if f.fold_params and f.method != "stack"
                else None,
                "fold_regularisation": [stack_mod.regularisation(p) for p in f.fold_params]
                if f.method == "stack"
                else None,
                "out_of_fold": f.metrics,
                "member_scores": f.ta.member_scores(),
                "units": int(f.ta.P.shape[1]),
                "examples": f.ta.n_examples,
            }
            if f.note:
                rec["note"] = f.note
            if f.warning:
                rec["warning"] = f.warning
            tasks[name] = rec
        return {
            "format_version": 1,
            "kind": self.kind,
            "method": self.method,
            "members": [_member_record(m) for m in self.members],
            "protocol": {
                "split": "dev",
                "folds": self.folds,
                "seed": self.seed,
                "reported": "out-of-fold" if METHODS.get(self.method).tuned else "untuned",
                "features": self.features,
                "text": protocol_text(self.method, self.folds, self.seed),
            },
            "tasks": tasks,
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        """Tuned ensembles that score below their best member out-of-fold (printed, and in ensemble.json)."""
        return [f.warning for f in self.tasks.values() if f.warning]

    def results(self) -> dict[str, Any]:
        """``results.json``: the run-like record compare reads (kind, metrics, cost = sum of members)."""
        import mtfuse

        return {
            "kind": self.kind,
            "method": self.method,
            "tasks": list(self.tasks),
            "command": command_line(),
            "metrics": self.metrics(),
            "seed": self.seed,
            "folds": self.folds,
            "members": [_member_record(m) for m in self.members],
            "cost": _sum_cost(self.members),
            "versions": {"mtfuse": mtfuse.__version__, "python": platform.python_version()},
        }

    def write(self, output: Path, overwrite: bool = False) -> None:
        """Write the directory atomically (``rundir.write_dir_atomic``: only over an ensemble or stack)."""

        def fill(tmp: Path) -> None:
            rundir.write_json(tmp / rundir.ENSEMBLE, self.spec())
            rundir.write_json(tmp / rundir.METRICS, self.metrics())
            rundir.write_json(tmp / rundir.RESULTS, self.results())
            rundir.write_json(tmp / DIVERSITY, self.diversity)
            write_card(tmp, name=output.name)
            for name, f in self.tasks.items():
                path = rundir.inside(tmp, rundir.PREDICTIONS, f"{rundir.check_name(name, 'ensemble')}.jsonl")
                rundir.write_jsonl(path, f.ta.records(f.out))

        rundir.write_dir_atomic(output, self.kind, overwrite, fill)


def fuse(
    run_dirs: Sequence[str | Path],
    tasks: Sequence[str] | None = None,
    method: str = "mean",
    folds: int = 5,
    seed: int = 0,
    features: str = "probs",
    options: TuningOptions | None = None,
) -> Fusion:
    """Read the members, check them, fuse every task; nothing is written."""
    from mtfuse.fusion.ensemble.diversity import diversity_report

    m = METHODS.get(method)  # unknown method: "unknown ensemble method 'x'; choose from [...]"
    stack_mod.check_features(features, method)
    members, arrays = load_all(list(run_dirs), split_names(tasks))
    texts = {name for name, ta in arrays.items() if ta.type.fused_as_text}  # generation: MBR selection
    if method == "stack" and texts:
        fuse_texts(arrays[sorted(texts)[0]], method)  # refused with its reason, before any work
    if m.tuned:
        for name, ta in arrays.items():
            if name not in texts:
                check_folds(name, ta.n_examples, folds)
    opts = replace(options, seed=seed) if options is not None else TuningOptions(seed=seed)
    fused = {
        name: fuse_texts(ta, method) if name in texts else fuse_task(ta, method, folds, opts)
        for name, ta in arrays.items()
    }
    return Fusion(method, members, fused, folds, seed, features, diversity_report(arrays))


def ensemble_command(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    tasks: Sequence[str] | None = None,
    method: str = "mean",
    folds: int = 5,
    seed: int = 0,
    features: str = "probs",
    overwrite: bool = False,
    console: Any = None,
) -> Fusion:
    """``mtfuse ensemble RUN_DIR... --output DIR``: fuse members' dev predictions per task and write a
    run-like directory.

    Args:
        run_dirs: run directories (or ensemble directories) that share the tasks; any mix of single- and
            multi-task runs.
        output: the directory to write (refused if it exists, unless ``overwrite`` and it holds an ensemble
            or a stack: ``mtfuse.rundir.check_output``).
        tasks: task names (``a,b`` strings are split); default: every task all members share whose outputs
            can be fused (``TaskType.fusable``: masked_lm tasks are left out).
        method: one of ``METHODS`` (``mean``, ``soft_vote``, ``vote``, ``weighted_nll``, ``weighted_metric``,
            ``caruana``, ``stack``).
        folds: k of the k-fold cross-validation that tunes and scores tuned methods.
        seed: the fold shuffle (and random search) seed.
        features: the stack's inputs: ``probs`` (members' probabilities; ``probs+pooled`` is refused: run
            directories hold no encoder features).
        overwrite: replace an existing ensemble directory.
        console: a ``rich`` console to print tables on (None: print nothing).

    Writes ``ensemble.json`` (members, method, protocol, per-task parameters and fold weights),
    ``metrics.json`` (out-of-fold dev metrics, the shape train writes), ``results.json`` (kind ``ensemble``
    / ``stack``, cost = sum of members), ``predictions/<task>.jsonl`` (out-of-fold) and ``diversity.json``.
    Every bad input is one ``MtfuseError`` raised before anything is written. A tuned ensemble that scores
    below its best member out-of-fold is a warning (printed, and listed in ``ensemble.json``)."""
    output = Path(output)
    command = "stack" if method == "stack" else "ensemble"
    rundir.check_output(output, command, overwrite)  # refuse before the slow part
    fusion = fuse(run_dirs, tasks, method, folds, seed, features)
    fusion.write(output, overwrite)
    if console is not None:
        print_fusion(fusion, output, console)
    for w in fusion.warnings():
        if console is not None:
            console.print(f"warning: {w}", style="yellow", highlight=False)
        else:
            print(f"warning: {w}", file=sys.stderr)
    return fusion


def print_fusion(fusion: Fusion, output: Path, console: Any) -> None:
    from rich.table import Table

    from mtfuse.fusion.ensemble.diversity import LEGEND, diversity_tables

    table = Table(title=f"{fusion.kind} '{fusion.method}' ({output}): dev metrics")
    table.add_column("task")
    table.add_column("metric")
    table.add_column(fusion.kind, justify="right")
    for i in range(len(fusion.members)):
        table.add_column(f"member {i + 1}", justify="right")
    table.add_column("weights" if fusion.method != "stack" else "regularisation")
    for name, f in fusion.tasks.items():
        ms = f.ta.member_scores()
        w = f.params.get("weights")
        if w is not None:
            wtxt = ", ".join(f"{x:.2f}" for x in w)
        else:
            wtxt = ", ".join(f"{k}={v}" for k, v in stack_mod.regularisation(f.params).items())
        for j, (metric, v) in enumerate(f.metrics.items()):
            table.add_row(name, metric, f"{v:.2f}", *[f"{s[metric]:.2f}" for s in ms], wtxt if j == 0 else "")
    table.add_row("average", "", f"{fusion.metrics()['average']:.2f}", *[""] * len(fusion.members), "")
    console.print(table)
    for i, m in enumerate(fusion.members):
        console.print(f"member {i + 1}: {m.path}", highlight=False)
    console.print(LEGEND, highlight=False)
    for t in diversity_tables(fusion.diversity):
        console.print(t)
    console.print(protocol_text(fusion.method, fusion.folds, fusion.seed), highlight=False)
    console.print(f"ensemble directory: {output}", highlight=False)
