"""BERT's token masking for masked language modelling, drawn from a seed per sequence.

Devlin et al. 2019 ("BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
NAACL), section 3.1: each token that is not a special token (nor padding) is chosen with probability 0.15;
a chosen token becomes [MASK] 80% of the time, a random token 10% and stays as it is 10%; the loss is the
cross-entropy on the chosen positions only. The draw is transformers'
``DataCollatorForLanguageModeling.torch_mask_tokens``, which does exactly that (``mlm_probability``,
``mask_replace_prob``, ``random_replace_prob``; a random token is any id of the tokenizer's vocabulary).

What is added here is where the random numbers come from: a ``torch.Generator`` per sequence, seeded from a
key (:func:`seed_of`), so a sequence's mask depends on the key and its tokens only: not on the global RNG,
the batch it is in, the batch size or the number of processes.
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

import numpy as np
import torch

from mtfuse.errors import MtfuseError


def masking_collator(
    tokenizer: Any, mlm_probability: float, mask_replace_prob: float, random_replace_prob: float
) -> Any:
    """transformers' ``DataCollatorForLanguageModeling`` with these shares (its ``torch_mask_tokens`` is
    what :func:`mask_sequence` calls). A tokenizer without a mask token is refused."""
    from transformers import DataCollatorForLanguageModeling

    if tokenizer.mask_token is None:
        raise MtfuseError(
            f"masked_lm: the tokenizer ({type(tokenizer).__name__}) has no mask token; masked language "
            "modelling needs one (BERT's [MASK], RoBERTa's <mask>)"
        )
    return DataCollatorForLanguageModeling(
        tokenizer,
        mlm=True,
        mlm_probability=mlm_probability,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
        return_tensors="pt",
    )


def seed_of(*key: int) -> int:
    """A 63-bit seed from integers (numpy's ``SeedSequence`` mixes them: nearby keys give unrelated draws)."""
    words = np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


def text_key(ids: np.ndarray) -> int:
    """A sequence's key by content (CRC-32 of its token ids): the same text gets the same fixed mask."""
    return zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes())


def special_mask(ids: np.ndarray, special_ids: np.ndarray) -> np.ndarray:
    """Positions that are never chosen: the tokenizer's special tokens ([CLS], [SEP], [PAD], [UNK], ...), as
    ``DataCollatorForLanguageModeling`` leaves them out."""
    return np.isin(ids, special_ids)


def mask_sequence(
    collator: Any, ids: np.ndarray, special: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of one sequence: the inputs with the chosen tokens replaced (80/10/10), the labels
    the original ids at the chosen positions and ``IGNORE_INDEX`` elsewhere."""
    draw = copy.copy(collator)  # its own generator: the shared collator is never changed
    draw.generator = torch.Generator().manual_seed(seed)
    inputs, labels = draw.torch_mask_tokens(
        torch.from_numpy(np.array(ids, dtype=np.int64))[None], torch.from_numpy(np.asarray(special))[None]
    )
    labels = labels[0].numpy()
    # torch_mask_tokens marks unchosen positions with -100; imported here: tasks.types imports this module
    from mtfuse.tasks.types.base import IGNORE_INDEX

    labels[labels == -100] = IGNORE_INDEX
    return inputs[0].numpy(), labels
