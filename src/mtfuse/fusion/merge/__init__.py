"""Parameter-level merging: one file per method, each a pure function over the tensors of one parameter.

``MERGE_METHODS.get(name)`` returns a :class:`MergeMethod` (see ``base.py`` for the contract)::

    method.merge(tensors, base, params, weights, *, generator=None) -> Tensor

Methods: ``linear`` (model soup), ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``,
``breadcrumbs``, ``della``, ``slerp``, ``model_stock``. Shared building blocks are in ``primitives.py``.
"""

from mtfuse.fusion.merge import (  # noqa: F401  (register the methods)
    breadcrumbs,
    dare,
    della,
    linear,
    model_stock,
    slerp,
    task_arithmetic,
    ties,
)
from mtfuse.fusion.merge.base import MERGE_METHODS, MergeMethod, merge_method, tensor_generator

__all__ = ["MERGE_METHODS", "MergeMethod", "merge_method", "tensor_generator"]
