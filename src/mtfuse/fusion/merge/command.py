"""``mtfuse merge``: carry out one :class:`~mtfuse.fusion.merge.request.MergeRequest`: a merge, or (with a
search) a search over merges whose winner is written; then score the merged model on dev."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtfuse import rundir
from mtfuse.fusion.merge.driver import merge_runs
from mtfuse.fusion.merge.request import MergeRequest
from mtfuse.fusion.merge.search import search_merge


def run_request(
    request: MergeRequest,
    output: Path,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Merge (or search, then merge the winner) into ``output``: (merge record, search log or None)."""
    if request.search is not None:
        return search_merge(request, output, overwrite, log)
    return merge_runs(request, output, overwrite, log=log), None


def score_merge(output: Path) -> dict[str, Any]:
    """Score a merge output on dev (on its inputs' dev examples: their ``subset``), write its ``metrics.json``
    and rewrite its model card with them. Returns the metrics."""
    from mtfuse.evaluate import evaluate_run
    from mtfuse.model_card import write_card

    result, _ = evaluate_run(output, "dev", [], output / rundir.METRICS, whole_splits=False)
    write_card(output)
    return result
