"""Masked language modelling (MLM) on unlabelled text, as an auxiliary task beside supervised ones.

Devlin et al. 2019 ("BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
NAACL): 15% of the tokens that are not special tokens or padding are chosen, of those 80% become [MASK], 10%
a random token and 10% stay as they are, and the loss is the cross-entropy on the chosen positions only
(``mtfuse.tasks.masking``, which runs transformers' ``DataCollatorForLanguageModeling`` draw). The type
leaves the generic path through these hooks:

- text: the task's text fields of any reader's rows: ``lines`` (one text a line), ``jsonl`` (a text field) or
  another task's data (``glue`` CoLA's ``sentence``); a label field in the rows is never read. Two text
  fields are one input, ``[CLS] a [SEP] b [SEP]``, as the sentence pairs (segments A and B) of BERT's
  pre-training, not two examples: the MLM sees the pair inputs the pair task is trained on.
- ``encode_rows``: the texts tokenised as any task's; a labelled split also gets its fixed masks, one per
  text, seeded by ``masked_lm.eval_seed`` and the text's token ids, so that every evaluation (and every run
  with the same data) scores the same masked tokens and perplexities compare. An example's gold is its
  masked tokens (word pieces).
- ``collate``: a training batch (``draw`` = its stream's seed and epoch) masks each example afresh from
  (seed, epoch, example index): a new mask at every pass over the data, RoBERTa's dynamic masking (Liu et
  al. 2019), and on a resumed run the masks of the uninterrupted one; any other batch uses the fixed masks.
  The batch holds the inputs with the chosen tokens replaced, ``mlm_mask`` [B, T] (the chosen positions, what
  the head scores) and ``labels`` [N] (their original ids, row by row). An unlabelled input (``mtfuse
  predict``) marks its own [MASK] tokens instead.
- ``loss``: the mean cross-entropy over the chosen positions of the batch (as ``BertForMaskedLM``).
- ``predict_split`` / records: each example's masked positions, their top-k fillers (``masked_lm.top_k``) and,
  with gold, the negative log-likelihood of each gold token; for an input, its text with every [MASK] filled.
- ``score``: ``perplexity`` = exp(mean NLL over every masked token of the split) and ``mlm_loss`` = that
  mean; lower is better (``mtfuse.metrics.LOWER_IS_BETTER``: the task score is 100 / perplexity).
- ensembles and stacks do not fuse it (``fusable``): its outputs fill masked tokens, they are no predictions
  of a task's labels. Merging treats its head as any other head.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.batching import pad_inputs
from mtfuse.errors import MtfuseError
from mtfuse.tasks.masking import mask_sequence, masking_collator, seed_of, special_mask, text_key
from mtfuse.tasks.types.base import IGNORE_INDEX, TaskType, register

METRICS_ALLOWED = ("perplexity", "mlm_loss")


def options(task: Any) -> Any:
    """The task's ``masked_lm`` section (its defaults when the config has none)."""
    from mtfuse.config import MaskedLMOptions

    return getattr(task.cfg, "masked_lm", None) or MaskedLMOptions()


@register("masked_lm")
class MaskedLM(TaskType):
    """Unlabelled text (one or two text fields) -> BERT's masked tokens; metrics perplexity and mlm_loss."""

    name = "masked_lm"
    head = "masked_lm"
    text_fields_allowed = (1, 2)
    default_metrics = METRICS_ALLOWED
    metrics_allowed = METRICS_ALLOWED
    has_vocab = False
    labelled = False
    fusable = False
    options_field = "masked_lm"

    def num_outputs(self, vocab: list[str] | None) -> int:
        return 1  # the vocabulary size comes with the encoder (head_config)

    def head_config(
        self, task: Any, encoder_config: Any, tokenizer: Any, model: Any = None
    ) -> dict[str, Any]:
        """The vocabulary size (the decoder is the encoder's word embeddings) and the transform's activation
        and LayerNorm epsilon, the encoder's own (as ``BertPredictionHeadTransform`` takes them)."""
        if encoder_config is None or tokenizer is None:
            raise MtfuseError(
                f"task '{task.name}': a masked_lm head needs the encoder's config and tokenizer"
            )
        act = getattr(encoder_config, "hidden_act", "gelu")
        return {
            "num_outputs": int(encoder_config.vocab_size),
            "lm_head": {
                "hidden_act": act if isinstance(act, str) else "gelu",
                "layer_norm_eps": float(getattr(encoder_config, "layer_norm_eps", 1e-12)),
            },
        }

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        return True

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The trivial baseline: a unigram model of the train split's masked tokens, add-one smoothed over the
        token types train has plus one for every other type."""
        counts = Counter(t for g in gold_train for t in g)
        total, types = sum(counts.values()), len(counts) + 1
        top = counts.most_common(1)[0][0] if counts else ""

        def nll(t: str) -> float:
            return -math.log((counts.get(t, 0) + 1) / (total + types))

        return [{"positions": [], "tokens": [top] * len(g), "nll": [nll(t) for t in g]} for g in gold]

    def describe(self, task: Any, split: str) -> dict[str, Any]:
        """How many tokens may be masked (not special) and how many the split's fixed masks chose."""
        enc = task.splits[split]
        if enc.labels is None:
            return {}
        special = enc.extra["special_ids"]
        maskable = sum(int((~special_mask(ids, special)).sum()) for ids in enc.input_ids)
        masked = sum(int((y != IGNORE_INDEX).sum()) for y in enc.labels)
        return {
            "maskable_tokens": maskable,
            "masked_tokens": masked,
            "masked_share": round(masked / maskable, 4) if maskable else 0.0,
        }

    # -- encoding and batches --------------------------------------------------------------------------
    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None]:
        from mtfuse.tasks.features import texts_of

        o = options(task)
        tok = tokenizing.tok
        enc = tokenizing.encode(texts_of(rows, task.text_fields, False), False, task.cfg.max_length)
        collator = masking_collator(tok, o.mlm_probability, o.mask_replace_prob, o.random_replace_prob)
        enc.extra.update(
            tokenizer=tok,
            collator=collator,
            special_ids=np.array(sorted(set(tok.all_special_ids)), dtype=np.int64),
            mask_id=int(tok.mask_token_id),
        )
        if not with_labels:  # an input to fill: its own [MASK] tokens are predicted
            return enc, None
        inputs, labels, gold = [], [], []
        for ids in enc.input_ids:
            seed = seed_of(o.eval_seed, text_key(ids))  # by content: the same text, the same mask
            x, y = mask_sequence(collator, ids, special_mask(ids, enc.extra["special_ids"]), seed)
            inputs.append(x)
            labels.append(y)
            gold.append(tok.convert_ids_to_tokens(ids[y != IGNORE_INDEX].tolist()))
        enc.extra["masked_inputs"] = inputs
        enc.labels = labels
        return enc, gold

    def collate(
        self, enc: Any, idx: list[int], pad_id: int, draw: tuple[int, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        tt = [enc.token_type_ids[i] for i in idx] if enc.token_type_ids is not None else None
        rows = list(range(len(idx)))
        if enc.labels is None:
            batch = pad_inputs([enc.input_ids[i] for i in idx], tt, rows, pad_id)
            batch["mlm_mask"] = batch["input_ids"].eq(enc.extra["mask_id"]) & batch["attention_mask"].bool()
            return batch
        if draw is None:  # the fixed masks
            inputs = [enc.extra["masked_inputs"][i] for i in idx]
            targets = [enc.labels[i] for i in idx]
        else:  # a training draw: a fresh mask per (stream seed, epoch, example)
            inputs, targets = [], []
            for i in idx:
                ids = enc.input_ids[i]
                special = special_mask(ids, enc.extra["special_ids"])
                x, y = mask_sequence(enc.extra["collator"], ids, special, seed_of(*draw, int(i)))
                inputs.append(x)
                targets.append(y)
        batch = pad_inputs(inputs, tt, rows, pad_id)
        full = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for r, y in enumerate(targets):
            full[r, : len(y)] = torch.from_numpy(y)
        where = full.ne(IGNORE_INDEX)
        batch.update(mlm_mask=where, labels=full[where])
        return batch

    # -- training --------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the batch's chosen positions (logits [N, V], labels [N]); 0, with the
        graph kept, for a batch where no token was chosen (short texts can draw none)."""
        if labels.numel() == 0:
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)

    # -- prediction ------------------------------------------------------------------------------------
    def predict_split(
        self,
        model: Any,
        task: Any,
        enc: Any,
        batch_size: int,
        device: torch.device,
        pad_id: int,
        autocast: Any,
    ) -> tuple[list[Any], list[Any]]:
        """Per example: its masked positions, the top filler of each, the NLL of each gold token (labelled
        splits) or the text with its [MASK] tokens filled (inputs); and the top-k fillers with probabilities."""
        tok = enc.extra["tokenizer"]
        k = min(options(task).top_k, int(tok.vocab_size))
        was = model.training
        model.eval()
        order = np.argsort(-enc.lengths(), kind="stable")  # long first: less padding, early OOM
        preds: list[Any] = [None] * len(enc)
        probs: list[Any] = [None] * len(enc)
        for start in range(0, len(order), batch_size):
            idx = [int(i) for i in order[start : start + batch_size]]
            batch = self.collate(enc, idx, pad_id)
            gold = batch.pop("labels", None)
            where = batch["mlm_mask"]
            with torch.no_grad(), autocast():
                logits = model(task.name, {key: v.to(device) for key, v in batch.items()})
            if logits.dim() == 3:  # every position (an ONNX export): keep the masked ones
                logits = logits[where.to(logits.device)]
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            top_p, top_i = logp.topk(k, dim=-1)
            nll = None if gold is None else (-logp.gather(1, gold.reshape(-1, 1))).reshape(-1)
            bounds = np.concatenate([[0], np.cumsum(where.sum(dim=1).numpy())])
            for r, i in enumerate(idx):
                a, b = int(bounds[r]), int(bounds[r + 1])
                fillers = [
                    list(zip(tok.convert_ids_to_tokens(ids), [round(p, 6) for p in ps], strict=True))
                    for ids, ps in zip(top_i[a:b].tolist(), top_p[a:b].exp().tolist(), strict=True)
                ]
                pred: dict[str, Any] = {
                    "positions": where[r].nonzero().reshape(-1).tolist(),
                    "tokens": [f[0][0] for f in fillers],
                    "nll": None if nll is None else nll[a:b].tolist(),
                }
                if gold is None:
                    filled = np.array(enc.input_ids[i], copy=True)
                    filled[pred["positions"]] = top_i[a:b, 0].numpy()
                    pred["text"] = tok.decode(filled.tolist(), skip_special_tokens=True)
                preds[i], probs[i] = pred, fillers
        model.train(was)
        return preds, probs

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float]:
        from mtfuse.metrics import METRICS

        nlls = [p["nll"] for p in preds]
        if any(n is None for n in nlls):
            raise MtfuseError(
                f"task '{task.name}': masked-LM predictions without gold tokens cannot be scored"
            )
        return {m: METRICS.get(m)(nlls, gold) for m in task.metrics}

    # -- records -----------------------------------------------------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """The masked token positions, the top filler of each and the top-k ``{token, prob}`` fillers; the
        NLL of each gold token (dev records) or the filled-in text (``mtfuse predict``)."""
        rec: dict[str, Any] = {
            "positions": list(pred["positions"]),
            "predicted": list(pred["tokens"]),
            "fillers": [[{"token": t, "prob": p} for t, p in row] for row in prob],
        }
        if pred.get("nll") is not None:
            rec["nll"] = [round(float(x), 4) for x in pred["nll"]]
        if pred.get("text") is not None:
            rec["text"] = pred["text"]
        return rec

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return list(gold)  # the masked tokens, as word pieces

    def same_gold(self, a: Any, b: Any) -> bool:
        return list(a) == list(b)

    # -- fusion ------------------------------------------------------------------------------------------
    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        raise MtfuseError(
            f"{where}: a masked_lm task's outputs fill masked tokens; they are no predictions of a task's "
            "labels, and ensembles and stacks do not fuse them (leave the task out with --tasks)"
        )

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """log p(token) summed over the masked positions (none chosen: 0)."""
        if labels.numel() == 0:
            return logits.float().sum() * 0.0
        return super().fisher_log_likelihood(logits, labels, mode, gen)

    def prediction_entropy(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Mean entropy of the vocabulary distribution at the masked positions (None when there are none)."""
        if logits.shape[0] == 0:
            return None
        return super().prediction_entropy(logits, attention_mask)
