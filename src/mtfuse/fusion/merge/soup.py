"""Greedy soups (Wortsman et al. 2022, recipe 1): a search over merges that picks the ingredients.

The method itself (``methods/greedy_soup.py``) is the uniform average of the kept ingredients; which ones are
kept is decided here, by merging and scoring candidate soups (the ``soup`` statistics the method declares):
add the runs best first, keep each one whose addition does not lower the selection score.
"""

from __future__ import annotations

from typing import Any

from mtfuse.evaluate import evaluate_tasks
from mtfuse.fusion.merge.statistics import (
    STATS,
    CoefficientStats,
    Scorer,
    StatsContext,
    device_for,
    load_run_model,
    load_split,
)
from mtfuse.metrics import aggregate
from mtfuse.model.encoder import load_tokenizer


@STATS.register("soup")
def soup_stats(ctx: StatsContext) -> CoefficientStats:
    """Greedy soup (Wortsman et al. 2022, recipe 1): add ingredients best first, keep those that help."""
    split: str = ctx.params.split  # type: ignore[attr-defined]
    inputs = ctx.inputs
    device = device_for(inputs)
    tokenizer = load_tokenizer(str(inputs[0].model_dir))
    data = load_split(inputs, split, tokenizer)
    batch = inputs[0].run_config.train.eval_batch_size if inputs[0].run_config else 128
    own: list[dict[str, Any]] = []
    for inp in inputs:  # each run as it is: its own encoder and heads, on its own tasks
        model, _ = load_run_model(inp, device)
        metrics, _ = evaluate_tasks(
            model, {t: data[t] for t in inp.tasks}, split, batch, device, tokenizer.pad_token_id or 0
        )
        own.append({"tasks": metrics, "average": aggregate(metrics)})
        del model
    order = sorted(range(len(inputs)), key=lambda i: (-own[i]["average"], i))
    head_from: dict[str, int] = {}
    for i in order:
        for t in inputs[i].tasks:
            head_from.setdefault(t, i)
    scorer = Scorer(inputs, head_from, split, data)

    def membership(keep: list[int]) -> CoefficientStats:
        return CoefficientStats([{"all": float(i in keep)} for i in range(len(inputs))])

    keep = [order[0]]
    best = scorer.score(ctx.merge_with(membership(keep)))
    steps = [{"add": str(inputs[order[0]].run_dir), "average": best["average"], "kept": True}]
    for i in order[1:]:
        cand = scorer.score(ctx.merge_with(membership([*keep, i])))
        ok = cand["average"] >= best["average"]
        steps.append({"add": str(inputs[i].run_dir), "average": cand["average"], "kept": ok})
        if ok:
            keep.append(i)
            best = cand
        ctx.log(f"greedy soup: {'kept' if ok else 'skipped'} {inputs[i].run_dir} ({cand['average']:.2f})")
    info = {
        "split": split,
        "selected_on": split,
        "note": (
            "ingredients chosen on the dev split: the soup's dev score is optimistic"
            if split == "dev"
            else "ingredients chosen on train rows the runs did not train on"
        ),
        "ingredient_scores": {str(inputs[i].run_dir): own[i]["average"] for i in range(len(inputs))},
        "order": [str(inputs[i].run_dir) for i in order],
        "steps": steps,
        "soup": [str(inputs[i].run_dir) for i in sorted(keep)],
        "soup_score": best,
        "heads": {t: str(inputs[i].run_dir) for t, i in head_from.items()},
    }
    values = [{"all": float(i in keep)} for i in range(len(inputs))]
    return CoefficientStats(values, info=info, head_from=head_from)
