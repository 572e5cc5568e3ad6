"""``mtfuse merge``: carry out one :class:`~mtfuse.fusion.merge.request.MergeRequest`: a merge, or (with a
search) a search over merges whose winner is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
