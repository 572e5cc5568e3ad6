"""The model card (``README.md``) of every train, merge, ensemble and stack directory, in the Hugging Face Hub
style: YAML front matter (``library_name``, ``tags``, ``base_model``, ``license``, ``datasets``,
``language``), then the tasks, the data, the dev metrics, how the model was made, the exact command and the
cost.

``model_card`` builds the text from what the directory records (``results.json``, the run config, the dev
metrics, the heads); ``write_card`` reads those files and writes the card. ``THIS_DIR`` in a card stands for
the directory that holds it. What a run cannot know (license,
datasets, language) comes from the config's optional ``card:`` section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mtfuse import rundir

#: the packaged encoder behind ``model.name_or_path: default``
DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"
KIND_TAG = {
    "single-task": "single-task",
    "multi-task": "multi-task-learning",
    "fine-tuned": "fine-tuned",
    "merged": "model-merging",
    "ensemble": "ensemble",
    "stack": "stacking",
}
#: the Hub's task tags for mtfuse's task types (a type not listed adds no tag)
TYPE_TAGS = {
    "classification": ["text-classification"],
    "pair_classification": ["text-classification"],
    "regression": ["text-classification"],
    "multilabel": ["text-classification"],
    "token_classification": ["token-classification"],
    "srl": ["token-classification"],
    "intent_slots": ["text-classification", "token-classification"],
    "generation": ["text2text-generation"],
    "span_qa": ["question-answering"],
    "multiple_choice": ["multiple-choice"],
    "masked_lm": ["fill-mask"],
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
MAX_LABELS = 12


def hub_id(name_or_path: str | None) -> str | None:
    """The Hub model id behind a ``model.name_or_path`` (None: a local folder, or not known)."""
    if name_or_path == "default":
        return DEFAULT_BASE
    if name_or_path and _HUB_ID.match(name_or_path) and not Path(name_or_path).exists():
        return name_or_path
    return None


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])


def _labels(labels: list[str] | None, task_type: str) -> str:
    if labels is None:
        return {
            "regression": "(a number)",
            "generation": "(text)",
            "span_qa": "(a span of the context)",
            "masked_lm": "(the masked tokens of unlabelled text)",
        }.get(task_type, "–")
    shown = ", ".join(map(str, labels[:MAX_LABELS]))
    return shown + (f", … ({len(labels)} in all)" if len(labels) > MAX_LABELS else "")


def _kv(d: dict[str, Any] | None, skip: tuple[str, ...] = ("method",)) -> str:
    items = [
        f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
        for k, v in (d or {}).items()
        if k not in skip and v not in ({}, [], None)
    ]
    return ", ".join(items)


def _common(values: list[Any]) -> Any:
    """The value every member has (None when they differ or one has none)."""
    return values[0] if values and all(v == values[0] for v in values) and values[0] is not None else None


def _facts(
    results: dict[str, Any], config: dict[str, Any] | None, members: list[dict[str, Any]]
) -> dict[str, Any]:
    """The base model and the card settings: the config's, or those every ensemble member shares."""
    merged_from = (results.get("merge") or {}).get("base")
    if config is not None or merged_from:
        base = merged_from or ((config or {}).get("model") or {}).get("name_or_path")
        return {"base": base, "card": (config or {}).get("card") or {}}
    configs = [m.get("config") or {} for m in members]
    bases = [(c.get("model") or {}).get("name_or_path") for c in configs]
    cards = [c.get("card") for c in configs]
    return {"base": _common(bases), "card": _common(cards) or {}}


def front_matter(results: dict[str, Any], heads: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    tags = ["mtfuse"]
    for t in [KIND_TAG.get(str(results.get("kind")), "")] + [
        tag for h in heads for tag in TYPE_TAGS.get(h.get("task_type", ""), [])
    ]:
        if t and t not in tags:
            tags.append(t)
    meta: dict[str, Any] = {"library_name": "mtfuse", "tags": tags}
    base = hub_id(facts["base"])
    if base:
        meta["base_model"] = base
    card = facts["card"]
    for key in ("license", "datasets", "language"):
        if card.get(key):
            meta[key] = card[key]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _summary(results: dict[str, Any], tasks: list[str], facts: dict[str, Any], members: list[dict]) -> str:
    kind, names = str(results.get("kind", "run")), ", ".join(f"`{t}`" for t in tasks)
    base = f"`{facts['base']}`" if facts["base"] else "a pretrained encoder"
    if kind == "merged":
        n = len((results.get("merge") or {}).get("inputs") or [])
        return f"One encoder merged from {n} fine-tuned runs of {base}, with a head for each of its tasks ({names})."
    if kind in ("ensemble", "stack"):
        how = "a stacked meta-learner over" if kind == "stack" else "an ensemble of"
        return f"{how.capitalize()} {len(members)} models' predictions for {names}."
    shared = (
        "one encoder shared by all tasks, a head per task" if len(tasks) > 1 else "one encoder and its head"
    )
    if facts["base"] == "lstm":  # model.name_or_path: lstm, no pretrained base
        return f"An embedding + LSTM encoder trained from scratch with mtfuse on {names}: {shared}."
    return f"{base} fine-tuned with mtfuse on {names}: {shared}."


def _data_section(
    config: dict[str, Any] | None, results: dict[str, Any], metrics: dict[str, Any]
) -> list[str]:
    if results.get("kind") in ("ensemble", "stack"):
        return ["The members' data (see their own cards); this model was fitted on their dev predictions."]
    if config is None:
        return ["Not recorded (no config.yaml)."]
    examples = results.get("examples") or {}
    train, dev = examples.get("train") or {}, examples.get("dev") or metrics.get("examples") or {}
    rows = []
    for t in config.get("tasks", []):
        data = t.get("data") or {}
        where = (
            data.get("path")
            or data.get("name")
            or ", ".join(f"{k}: {v}" for k, v in (data.get("files") or {}).items())
        )
        rows.append(
            [
                t["name"],
                data.get("format", "–"),
                where or "–",
                train.get(t["name"], "–"),
                dev.get(t["name"], "–"),
            ]
        )
    out = [_table(["task", "format", "path", "train examples", "dev examples"], rows)]
    sub = config.get("subset") or {}
    if sub.get("train") or sub.get("eval"):
        out.append(
            f"A seeded subset of the data (`subset.train={sub.get('train')}`, `subset.eval={sub.get('eval')}`, "
            f"seed {sub.get('seed', 0)}): the dev scores below are on that subset."
        )
    if results.get("kind") == "merged":
        out.append(
            "The merge read no data unless its method needs statistics (fisher, regmean, adamerging, greedy_soup)."
        )
    return out


def _metrics_section(results: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    tasks = metrics.get("tasks") or {}
    if not tasks:
        return ["Not evaluated yet: `mtfuse evaluate THIS_DIR` scores it on dev."]
    rows = [[t, m, f"{v:.2f}"] for t, ms in tasks.items() for m, v in ms.items()]
    if metrics.get("average") is not None:
        rows.append(["average", "", f"{metrics['average']:.2f}"])
    out = [_table(["task", "metric", "dev score (0-100)"], rows)]
    out.append("A task's score is the mean of its metrics; the average is the mean of the task scores.")
    if results.get("kind") in ("ensemble", "stack"):
        out.append(
            f"Scores of tuned methods are out-of-fold on dev ({results.get('folds')}-fold cross-validation, "
            f"seed {results.get('seed')}); see `ensemble.json`."
        )
    return out


def _made_section(
    results: dict[str, Any], config: dict[str, Any] | None, facts: dict[str, Any], members: list[dict]
) -> list[str]:
    kind = results.get("kind")
    if kind == "merged":
        m = results.get("merge") or {}
        lines = [
            f"- kind: merged, method `{m.get('method')}`"
            + (f" ({_kv(m.get('params'))})" if m.get("params") else "")
        ]
        lines.append(
            f"- base: `{m.get('base')}`; weights: {m.get('weights') or 'equal'}; seed {m.get('seed')}"
        )
        for i in m.get("inputs") or []:
            dist = (m.get("distance_to_base") or {}).get(i["run_dir"])
            far = f", relative L2 distance to base {dist:.4f}" if dist is not None else ""
            lines.append(f"- input `{i['run_dir']}`: tasks {', '.join(i.get('tasks') or [])}{far}")
        if m.get("search"):
            s = m["search"]
            lines.append(
                f"- hyperparameters chosen by a search over {s.get('points')} points on {s.get('split')}: "
                f"{_kv(s.get('best_point'), ())} (log `{s.get('log')}`; {s.get('note')})"
            )
        lines.append(
            "- `mtfuse merge --from THIS_DIR/merge.json --output NEW_DIR` merges it again, identically."
        )
        return lines
    if kind in ("ensemble", "stack"):
        lines = [
            f"- kind: {kind}, method `{results.get('method')}`, {results.get('folds')} folds, seed {results.get('seed')}"
        ]
        lines += [f"- member `{m['path']}` ({m.get('kind')})" for m in members]
        return lines
    cfg = config or {}
    tr, model = cfg.get("train") or {}, cfg.get("model") or {}
    sharing, sampling, weighting = (
        model.get("sharing") or {},
        cfg.get("sampling") or {},
        cfg.get("weighting") or {},
    )

    def method(d: dict[str, Any]) -> str:
        params = _kv(d)
        return f"`{d.get('method')}`" + (f" ({params})" if params else "")

    steps = f"{results.get('steps')} steps of {results.get('total_steps')}"
    if results.get("stopped_early"):
        steps += " (stopped early)"
    select = tr.get("select", "last")
    chosen = f"best dev average, step {results.get('best_step')}" if select == "best" else "the last step"
    start = (
        f"; started from the run `{results['init_from']}` (its encoder and the heads of matching tasks)"
        if results.get("init_from")
        else ""
    )
    origin = (
        "trained from scratch (`lstm`)" if facts["base"] == "lstm" else f"fine-tuned from `{facts['base']}`"
    )
    return [
        f"- kind: {kind}, {origin}{start}",
        f"- sharing {method(sharing)}, sampling {method(sampling)}, weighting {method(weighting)}, "
        f"step mode `{tr.get('step_mode')}`",
        f"- {steps}; batch size {tr.get('batch_size')}, lr {tr.get('lr')}, optimizer `{tr.get('optimizer')}`, "
        f"scheduler `{tr.get('scheduler')}`, seed {results.get('seed')}; weights kept: {chosen}",
        "- `config.yaml` is the resolved config: `mtfuse train THIS_DIR/config.yaml --output NEW_DIR` trains it "
        "again.",
    ]


def _cost_section(results: dict[str, Any]) -> list[str]:
    cost = results.get("cost") or {}
    names = {
        "parameters": "parameters",
        "encoder_parameters": "encoder parameters",
        "head_parameters": "head parameters",
        "members": "members",
        "train_seconds": "training time (s)",
        "train_samples_per_second": "training samples / s",
        "peak_memory_mb": "peak memory (MB)",
        "device": "device",
        "processes": "processes",
        "precision": "precision",
    }
    rows = [[label, cost[k]] for k, label in names.items() if cost.get(k) is not None]
    if not rows:
        return ["Not recorded."]
    out = [_table(["", "value"], rows)]
    if results.get("kind") in ("ensemble", "stack", "merged"):
        out.append("Training time (and for ensembles parameters and memory) is the sum of the inputs'.")
    return out


def model_card(
    results: dict[str, Any],
    config: dict[str, Any] | None = None,
    *,
    name: str,
    metrics: dict[str, Any] | None = None,
    heads: list[dict[str, Any]] | None = None,
    members: list[dict[str, Any]] | None = None,
) -> str:
    """The card's markdown.

    Args:
        results: the directory's ``results.json``.
        config: the run config as a dict (train, merge); None for ensembles and stacks.
        name: the directory's name (the title).
        metrics: the dev metrics (``metrics.json``); default: ``results["metrics"]``.
        heads: ``{"task", "task_type", "labels"}`` per task (``heads.json``, or an ensemble's tasks).
        members: an ensemble's members, ``{"path", "kind", "config"}`` (the member's config dict or None).
    """
    heads, members = heads or [], members or []
    metrics = metrics or results.get("metrics") or {}
    facts = _facts(results, config, members)
    tasks = [h["task"] for h in heads] or list(results.get("tasks") or [])
    task_rows = [
        [h["task"], h.get("task_type", "–"), _labels(h.get("labels"), h.get("task_type", ""))] for h in heads
    ]
    command = results.get("command")
    versions = ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items())
    parts = [
        front_matter(results, heads, facts),
        f"# {name}",
        _summary(results, tasks, facts, members),
        "## Tasks",
        _table(["task", "type", "labels"], task_rows) if task_rows else ", ".join(tasks),
        "## Data",
        *_data_section(config, results, metrics),
        "## Metrics",
        *_metrics_section(results, metrics),
        "## How it was made",
        "\n".join(_made_section(results, config, facts, members)),
        "## Command",
        f"```bash\n{command}\n```" if command else "Not recorded.",
        "## Cost",
        *_cost_section(results),
        "## Use",
        "```bash\n"
        f"mtfuse predict THIS_DIR --task {tasks[0] if tasks else 'TASK'} --input in.jsonl --output out.jsonl\n"
        "mtfuse serve THIS_DIR\n"
        "```",
    ]
    if versions:
        parts.append(f"Made with {versions}.")
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


def _heads(directory: Path) -> list[dict[str, Any]]:
    heads_json = directory / rundir.MODEL / rundir.HEADS_JSON
    if heads_json.is_file():
        return list(json.loads(heads_json.read_text(encoding="utf-8")).get("heads") or [])
    spec_json = directory / rundir.ENSEMBLE
    if spec_json.is_file():
        tasks = json.loads(spec_json.read_text(encoding="utf-8")).get("tasks") or {}
        return [{"task": t, "task_type": r.get("type"), "labels": r.get("labels")} for t, r in tasks.items()]
    return []


def write_card(directory: Path, name: str | None = None) -> Path:
    """Write ``directory/README.md`` from the files the directory holds (``name``: its title; default the
    directory's name: give the final name when ``directory`` is a temporary one)."""
    results = json.loads((directory / rundir.RESULTS).read_text(encoding="utf-8"))
    config = results.get("config") or _read_yaml(directory / rundir.CONFIG)
    metrics_file = directory / rundir.METRICS
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    members = [
        {**m, "config": _read_yaml(Path(m["path"]) / rundir.CONFIG)} for m in results.get("members") or []
    ]
    text = model_card(
        results,
        config,
        name=name or directory.name,
        metrics=metrics,
        heads=_heads(directory),
        members=members,
    )
    path = directory / rundir.MODEL_CARD
    rundir.write_text(path, text)
    return path
