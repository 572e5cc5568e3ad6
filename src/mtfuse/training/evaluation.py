"""The loop's periodic dev evaluation: scores, model selection, early stopping and the eval log record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.config import TrainConfig
from mtfuse.evaluate import evaluate_tasks, with_average
from mtfuse.training.finish import save_model_atomic
from mtfuse.training.log import RunLog
from mtfuse.training.setup import sdpa_attention
from mtfuse.training.state import Resumable
from mtfuse.training.steps import StepContext, conflict_diagnostics


def evaluate_and_log(
    ctx: StepContext,
    run: Resumable,
    tr: TrainConfig,
    out: Path,
    tokenizer: Any,
    log: RunLog,
    bar: Any,
    hf_copies: bool = True,
) -> dict[str, Any]:
    """Score every task on dev, keep the best weights (``select: best``), decide early stopping, log it all.

    Returns the evaluation (step, metrics, outputs), reused at the end when it scored the final weights."""
    acc, state = ctx.acc, run.loop
    # fp32 with the model's own attention, whatever the training precision: the scores that pick the best
    # checkpoint and stop early are the ones `mtfuse evaluate` gives for those weights
    with sdpa_attention(ctx.core, ctx.eager_attention):
        metrics, outputs = evaluate_tasks(
            ctx.core, ctx.tasks, "dev", tr.eval_batch_size, acc.device, ctx.pad_id
        )
    result = with_average(metrics)
    if state.best_score is None or result["average"] > state.best_score:
        state.best_score, state.best_step, state.evals_since_best = result["average"], state.step, 0
        if tr.select == "best" and acc.is_main_process:
            save_model_atomic(ctx.core, tokenizer, out / rundir.BEST_MODEL, hf_copies)
    else:
        state.evals_since_best += 1
    pat = tr.early_stopping_patience
    if pat is not None and state.evals_since_best >= pat:
        state.stopped_early = True
    rec = {
        "step": state.step,
        "event": "eval",
        "average": result["average"],
        "metrics": result["tasks"],
        "task_weights": run.weighting.weights(),
        "sampling_probs": run.sampler.probs(state.step),
    }
    if tr.diagnostics and len(ctx.tasks) > 1 and acc.is_main_process and ctx.shared:
        rec["gradient_cosine"] = conflict_diagnostics(ctx, tr.batch_size)
    state.history.append({"step": state.step, "average": result["average"]})
    log.eval_record(rec)
    if acc.is_main_process:
        bar.write(f"step {state.step}: dev average {result['average']:.2f}")
    return {"step": state.step, "metrics": metrics, "outputs": outputs}
