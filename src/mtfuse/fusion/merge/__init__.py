"""Parameter-level merging: one file per method under ``methods/``, each a pure function over the tensors of
one parameter, all in one registry ``MERGE_METHODS`` (importing this package registers every method)::

    method.merge(tensors, base, params, weights, *, stats=None, generator=None) -> Tensor

Tensor-only methods: ``linear`` (model soup), ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``,
``breadcrumbs``, ``breadcrumbs_ties``, ``della``, ``della_linear``, ``slerp``, ``nuslerp``, ``multislerp``,
``karcher``, ``model_stock``, ``sce``, and the spectral / optimised ones ``tsv_m``, ``iso_c``, ``iso_cts``,
``wudi``. Data-dependent methods declare the statistics they
need (``needs_stats``): ``fisher``, ``regmean``, ``adamerging``, ``greedy_soup``.

One-way imports, bottom to top:

* ``method``: the interface, ``MERGE_METHODS`` and the checks every method shares; ``primitives``: shared
  building blocks; ``methods/``: the methods;
* ``inputs``: the runs to merge, read and checked (architecture, tokenizer, tasks, base);
* ``statistics``: what data-dependent methods take besides the tensors (Fisher, Gram matrices, AdaMerging
  coefficients), and the scorer of candidate merges;
* ``request``: ``MergeRequest``, everything a merge is made from (written to ``merge.json``, replayable);
* ``driver``: the streaming driver (``mtfuse merge``): tensors one name at a time, heads kept, the output
  directory written through ``mtfuse.rundir``;
* ``soup`` (greedy soups) and ``search`` (``--search``): searches over merges, built on the driver.
"""

from mtfuse.fusion.merge.method import MERGE_METHODS, MergeMethod, get_method, merge_method, tensor_generator
from mtfuse.fusion.merge.methods import (  # noqa: F401  (register the methods)
    adamerging,
    breadcrumbs,
    breadcrumbs_ties,
    dare,
    della,
    della_linear,
    fisher,
    greedy_soup,
    iso,
    karcher,
    linear,
    model_stock,
    multislerp,
    nuslerp,
    regmean,
    sce,
    slerp,
    task_arithmetic,
    ties,
    tsv,
    wudi,
)

__all__ = ["MERGE_METHODS", "MergeMethod", "get_method", "merge_method", "tensor_generator"]
