"""Building blocks of the task-vector merge methods: pure functions over tensors of one parameter.

A task vector is ``tau_i = theta_i - theta_base``. The methods are compositions of:

- sparsify each task vector on its own: :func:`magnitude_prune` (TIES), :func:`random_drop` (DARE),
  :func:`breadcrumbs_mask` (Model Breadcrumbs), :func:`della_drop` (DELLA's MAGPRUNE);
- combine them: :func:`combine` = a weighted sum, optionally normalised, optionally restricted per entry to
  the models that agree with the elected sign (:func:`sign_consensus` + :func:`disjoint_merge`, TIES);
- the spectral methods (TSV-M, Iso-C / Iso-CTS) orthogonalise stacked singular vectors with
  :func:`polar_factor` and fall back to :func:`mean_task_vector` for tensors that are not matrices.

Counts round to nearest (halves up): keeping a ``density`` fraction of ``n`` entries keeps
``round(density * n)`` of them, at least one when ``density > 0``; Breadcrumbs' outlier count
``round(gamma * n)`` may be 0. peft and mergekit truncate with ``int()`` (peft may keep 0 entries), which
gives the same counts whenever ``density * n`` is an integer. The sign of an entry is elected +1 on a tie
(sum exactly 0), as in peft and mergekit; entries equal to 0 agree with no sign. Magnitude cuts (TIES' trim,
Breadcrumbs' band) are values, found exactly by :func:`kth_largest`: entries tied in |value| with a cut go the
same way as it (rare in trained weights; peft and mergekit break such ties by index), so a tensor trimmed whole
or streamed in row blocks (``driver.merge_blocks``) gives the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor

from mtfuse.errors import ConfigError

SignMethod = Literal["sum", "count"]


def _count(fraction: float, n: int, at_least_one: bool = True) -> int:
    """round(fraction * n) (halves up), at most n; at least 1 when ``at_least_one`` and fraction, n > 0."""
    if fraction <= 0 or n == 0:
        return 0
    k = int(fraction * n + 0.5)
    return min(n, max(1, k) if at_least_one else k)


def _uniform(weights: list[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} task vectors")
    return [float(w) for w in weights]


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """A 0/1 mask with P(1) = probs, drawn on the generator's device (same masks on CPU and GPU)."""
    if generator is None:
        return torch.bernoulli(probs)
    return torch.bernoulli(probs.to(generator.device), generator=generator).to(probs.device)


def task_vectors(tensors: list[Tensor], base: Tensor) -> list[Tensor]:
    """tau_i = theta_i - theta_base for each fine-tuned tensor."""
    return [t - base for t in tensors]


def kth_largest(chunks: Callable[[], Iterable[Tensor]], k: int) -> float:
    """The k-th largest (1 = the largest) of the non-negative float values that ``chunks()`` yields, exactly.

    Two passes over the chunks, never more than one chunk plus the values of one narrow bin in memory, so a
    merge can trim a large tensor's task vector without holding it whole (``merge_state`` streams it). Written
    by hand because torch's ``kthvalue`` / ``topk`` need the whole tensor. Non-negative floats order as their
    bit patterns do: pass 1 counts the values per bin of their top 16 bits (8 mantissa bits, so one bin spans
    2^-8 relative), pass 2 keeps the values of the bin where the k-th largest lies and selects within it.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hist: Tensor | None = None
    for c in chunks():
        h = torch.bincount(_bins(c), minlength=1 << 16)
        hist = h if hist is None else hist + h
    if hist is None or int(hist.sum()) < k:
        raise ValueError(f"fewer than k = {k} values")
    at_or_above = hist.flip(0).cumsum(0).flip(0)  # [b]: how many values lie in bin b or higher
    b = int((at_or_above >= k).nonzero().max())
    rank = k - (int(at_or_above[b + 1]) if b + 1 < len(at_or_above) else 0)  # from the top, within bin b
    inside = torch.cat([c.reshape(-1)[_bins(c) == b] for c in chunks()])
    return float(torch.kthvalue(inside, inside.numel() - rank + 1).values)


def _bins(c: Tensor) -> Tensor:
    """The top 16 bits of each non-negative float's bit pattern (sign bit 0): monotone in the value."""
    c = c.reshape(-1)
    if c.dtype == torch.float64:
        return (c.view(torch.int64) >> 47).long()
    return (c.float().view(torch.int32) >> 15).long()


def magnitude_threshold(
    abs_chunks: Callable[[], Iterable[Tensor]], numel: int, density: float
) -> float | None:
    """TIES trim's cut: the ``round(density * numel)``-th largest |value| of a task vector given as chunks of
    its absolute values; None when every entry stays."""
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density}")
    k = _count(density, numel)
    return None if k >= numel else kth_largest(abs_chunks, k)


def trim(tv: Tensor, threshold: float | None) -> Tensor:
    """Keep the entries with |value| >= ``threshold`` (all when None), zero the rest."""
    return tv if threshold is None else tv * (tv.abs() >= threshold)


def magnitude_prune(tv: Tensor, density: float) -> Tensor:
    """TIES trim: keep the ``density`` fraction of entries with the largest |value|, zero the rest.

    Entries tied in |value| with the last one kept are all kept (they are rare in trained weights), so the
    result depends on the values alone: the same whether the tensor is trimmed whole or streamed in blocks."""
    return trim(tv, magnitude_threshold(lambda: [tv.abs()], tv.numel(), density))


def random_drop(
    tv: Tensor, density: float, rescale: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """DARE: keep each entry with probability ``density``; rescale the kept ones by 1/density if ``rescale``.

    ``density >= 1`` returns ``tv`` without drawing anything.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density >= 1:
        return tv
    mask = _bernoulli(torch.full_like(tv, density), generator)
    kept = tv * mask
    return kept / density if rescale else kept


def breadcrumbs_cuts(
    abs_chunks: Callable[[], Iterable[Tensor]], numel: int, density: float, gamma: float
) -> tuple[float | None, float | None]:
    """Model Breadcrumbs' band ``(low, high)`` of |value| for a task vector given as chunks of its absolute
    values: entries with ``low <= |v| < high`` stay, a ``density`` fraction, below the ``gamma`` fraction of
    largest ones (None: no bound on that side). Entries tied with a cut go the same way as it."""
    if not (0 <= density <= 1 and 0 <= gamma <= 1 and density + gamma <= 1 + 1e-9):
        raise ValueError(f"need 0 <= density, gamma and density + gamma <= 1, got {density}, {gamma}")
    n_keep = _count(density, numel)
    if n_keep == 0:
        return float("inf"), None
    n_top = min(_count(gamma, numel, at_least_one=False), numel - n_keep)
    high = kth_largest(abs_chunks, n_top) if n_top else None
    low = kth_largest(abs_chunks, n_top + n_keep) if n_top + n_keep < numel else None
    return low, high


def band_mask(tv: Tensor, low: float | None, high: float | None) -> Tensor:
    """A bool mask of the entries with ``low <= |v| < high`` (a None bound is open)."""
    a = tv.abs()
    mask = torch.ones_like(tv, dtype=torch.bool) if low is None else a >= low
    return mask if high is None else mask & (a < high)


def breadcrumbs_mask(tv: Tensor, density: float, gamma: float) -> Tensor:
    """Model Breadcrumbs: a bool mask dropping the ``gamma`` fraction of largest |values| (outliers) and then
    the smallest ones, so that a ``density`` fraction of entries stays (``density + gamma <= 1``)."""
    return band_mask(tv, *breadcrumbs_cuts(lambda: [tv.abs()], tv.numel(), density, gamma))


def della_drop(
    tv: Tensor,
    density: float,
    epsilon: float,
    rescale: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DELLA's MAGPRUNE: keep each entry with a probability that grows with its magnitude rank.

    Within each row (the first dimension; a 0/1-D tensor is one row), entries ranked by |value| get keep
    probabilities spread linearly from ``density - epsilon`` (smallest) to ``density + epsilon`` (largest), so
    the mean keep probability is ``density``. Kept entries are rescaled by 1/(their keep probability) when
    ``rescale`` (the paper's 1/(1-p) with p the drop probability), which keeps the expectation unbiased.
    """
    if not (epsilon >= 0 and density - epsilon > 0 and density + epsilon <= 1 + 1e-9):
        raise ValueError(f"need 0 < density - epsilon and density + epsilon <= 1, got {density}, {epsilon}")
    if density >= 1:
        return tv
    rows = tv.reshape(tv.shape[0], -1) if tv.dim() >= 2 else tv.reshape(1, -1)
    m = rows.shape[1]
    if m == 0:
        return tv
    order = torch.argsort(rows.abs(), dim=1)
    ranks = torch.empty_like(rows).scatter_(  # rank of each entry in its row, 0 = smallest
        1, order, torch.arange(m, dtype=rows.dtype, device=rows.device).expand_as(rows)
    )
    rank01 = ranks / (m - 1) if m > 1 else torch.full_like(rows, 0.5)
    keep = ((density - epsilon) + 2 * epsilon * rank01).clamp_(max=1.0)
    kept = rows * _bernoulli(keep, generator)
    if rescale:
        kept = kept / keep
    return kept.reshape(tv.shape)


def sign_consensus(
    tvs: list[Tensor], weights: list[float] | None = None, method: SignMethod = "sum"
) -> Tensor:
    """TIES "elect sign": +1/-1 per entry, the sign of sum_i w_i tau_i ("sum", the paper's total mass) or of
    sum_i sign(w_i tau_i) ("count", a majority vote). Ties elect +1."""
    w = _uniform(weights, len(tvs))
    total = torch.zeros_like(tvs[0])
    for wi, tv in zip(w, tvs, strict=True):
        if method == "sum":
            total.add_(tv, alpha=wi)
        elif method == "count":
            total.add_(torch.sign(tv * wi))
        else:
            raise ValueError(f"unknown sign method '{method}'; choose from [count, sum]")
    return torch.where(total >= 0, 1.0, -1.0).to(tvs[0].dtype)


def disjoint_merge(
    tvs: list[Tensor], weights: list[float] | None, signs: Tensor, normalize: bool = True
) -> Tensor:
    """TIES "disjoint merge": per entry, combine only the models whose tau has the elected sign.

    Returns ``sum_i w_i m_i tau_i / sum_i w_i m_i`` (m_i = 1 where sign(tau_i) equals ``signs``; an entry no
    model agrees with is 0), i.e. the paper's mean over agreeing models when the weights are equal. With
    ``normalize=False`` the plain sum ``sum_i w_i m_i tau_i``.
    """
    w = _uniform(weights, len(tvs))
    num = torch.zeros_like(tvs[0])
    den = torch.zeros_like(tvs[0])
    for wi, tv in zip(w, tvs, strict=True):
        agree = (torch.sign(tv) == signs).to(tv.dtype)
        num.add_(tv * agree, alpha=wi)
        den.add_(agree, alpha=wi)
    if not normalize:
        return num
    return num / torch.where(den == 0, torch.ones_like(den), den)


def combine(
    tvs: list[Tensor],
    weights: list[float] | None = None,
    *,
    consensus: SignMethod | None = None,
    normalize: bool = False,
) -> Tensor:
    """The task-arithmetic core: the merged task vector (add ``scale *`` it to the base).

    ``consensus=None``: ``sum_i w_i tau_i`` (divided by ``sum_i w_i`` if ``normalize``). Otherwise TIES:
    elect signs with ``consensus`` then :func:`disjoint_merge`.
    """
    w = _uniform(weights, len(tvs))
    if consensus is not None:
        return disjoint_merge(tvs, w, sign_consensus(tvs, w, consensus), normalize=normalize)
    out = torch.zeros_like(tvs[0])
    for wi, tv in zip(w, tvs, strict=True):
        out.add_(tv, alpha=wi)
    if normalize:
        total = sum(w)
        if abs(total) < 1e-12:
            raise ValueError(f"cannot normalise: the weights {w} sum to 0")
        out = out / total
    return out


def weighted_mean(tensors: list[Tensor], weights: list[float], method: str) -> Tensor:
    """sum_i w_i t_i / sum_i w_i: the fallback of the statistics-weighted methods."""
    total = sum(weights)
    if total <= 0:
        raise ConfigError(f"merge method '{method}': the weights {weights} sum to 0; cannot average")
    out = torch.zeros_like(tensors[0])
    for w, t in zip(weights, tensors, strict=True):
        out.add_(t, alpha=w)
    return out / total


def mean_task_vector(tvs: list[Tensor]) -> Tensor:
    """(1/T) sum_i tau_i: what the spectral methods (TSV-M, Iso, WUDI) use for tensors that are not matrices."""
    out = torch.zeros_like(tvs[0])
    for tv in tvs:
        out.add_(tv)
    return out / len(tvs)


def polar_factor(m: Tensor) -> Tensor:
    """P Q^T from the thin SVD m = P S Q^T: the matrix with orthonormal columns (rows, if wider than tall)
    nearest to ``m`` in Frobenius norm (orthogonal Procrustes). Used to orthogonalise concatenated singular
    vectors (TSV-M, Iso-CTS)."""
    p, _, qh = torch.linalg.svd(m, full_matrices=False)
    return p @ qh
