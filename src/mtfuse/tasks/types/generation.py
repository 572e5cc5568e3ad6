"""Sequence-to-sequence generation (translation, summarisation, dialogue): source text -> target text.

The shared encoder reads the source; the task's head is a decoder: ``seq2seq_decoder`` in
``mtfuse.model.heads`` (a BERT decoder with cross-attention, warm-started from the encoder's checkpoint as in
Rothe, Narayan & Severyn 2020), or, when the shared encoder is an encoder-decoder checkpoint (T5, BART...),
``seq2seq_lm`` in ``mtfuse.model.seq2seq_head`` (the checkpoint's own decoder and LM head, per task or shared
by every generation task: ``model.decoder``). The type leaves the generic path through every hook of the
contract:

- ``encode_rows``: the source (its text fields; a list of strings, as SciTLDR's sentences, is joined) with an
  optional T5-style task prefix, cut at ``max_length``; the target tokenised by the same tokenizer, cut at
  ``generation.max_target_length``, kept in ``Encoded.extra["targets"]`` without its start token.
- ``collate``: ``decoder_input_ids`` = the target shifted right behind the start token ([CLS] for BERT),
  ``labels`` = the target padded with -100 (an encoder-decoder's head shifts the labels itself, behind the
  model's own ``decoder_start_token_id``).
- ``loss``: token-level cross-entropy averaged over every target token of the batch, with label smoothing
  (``generation.label_smoothing``; Szegedy et al. 2016).
- ``predict_split``: decoding with transformers ``generate`` (greedy, beam search, top-k / top-p sampling,
  seeded), long sources first; each output's score is the mean log-probability of its tokens.
- ``score``: the task's metrics on the decoded strings against every reference.

A target may be a list of references: metrics use all of them; training uses the first
(``generation.train_references: first``) or each as its own pair (``each``). Ensembles fuse the members'
texts by minimum-Bayes-risk selection (:func:`mbr_select`), not by averaging probabilities.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtfuse.batching import pad_inputs
from mtfuse.errors import ConfigError, DataError, MtfuseError
from mtfuse.tasks.types.base import IGNORE_INDEX, TaskType, register

METRICS_ALLOWED = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "distinct1", "distinct2", "gen_len")


def settings(task: Any) -> Any:
    """The task's ``generation`` section (its defaults when the config has none)."""
    from mtfuse.config import GenerationConfig

    return task.cfg.generation or GenerationConfig()


def special_tokens(tokenizer: Any) -> dict[str, int]:
    """Start, end and padding ids of the target side: BERT's [CLS] / [SEP] / [PAD] (as the BERT2BERT models
    of Rothe et al. use them), else (an encoder-decoder's tokenizer: T5, BART) the padding token / EOS /
    padding. The start token is cut from the front of a tokenised target; an encoder-decoder's targets keep
    every token its tokenizer gives them (BART's ``<s>``, as transformers' seq2seq fine-tuning does) and its
    decoder starts with the model's own ``decoder_start_token_id`` (``mtfuse.model.seq2seq_head``)."""
    bert = tokenizer.cls_token_id is not None and tokenizer.bos_token_id is None  # BART's <s> is both
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start = tokenizer.cls_token_id if bert else pad
    eos = tokenizer.sep_token_id if bert else tokenizer.eos_token_id
    if eos is None:
        raise MtfuseError(
            "generation: the tokenizer has no end token (sep or eos); cannot mark a target's end"
        )
    return {
        "start_token_id": int(pad if start is None else start),
        "eos_token_id": int(eos),
        "pad_token_id": pad,
    }


def mbr_select(candidates: list[str], weights: list[float] | None = None) -> int:
    """Minimum-Bayes-risk selection (Kumar & Byrne 2004, "Minimum Bayes-Risk Decoding for Statistical
    Machine Translation"): the candidate with the highest expected utility against the others, the utility
    being sentence chrF (Popovic 2015; Freitag et al. 2022 find chrF and other overlap utilities work for
    MBR), the others weighted by ``weights`` (uniform by default). Ties go to the earliest candidate."""
    import sacrebleu

    m = len(candidates)
    if m == 1:
        return 0
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    gain = np.zeros(m)
    for i, c in enumerate(candidates):
        for j, r in enumerate(candidates):
            if i != j:
                gain[i] += w[j] * sacrebleu.sentence_chrf(c, [r]).score
    return int(np.argmax(gain))


@register("generation")
class Generation(TaskType):
    """Source text field(s) -> target text (a string, or a list of reference strings)."""

    name = "generation"
    head = "seq2seq_decoder"
    text_fields_allowed = (1, 2)
    default_metrics = ("bleu", "chrf", "gen_len")
    metrics_allowed = METRICS_ALLOWED
    has_vocab = False
    #: members' outputs are texts: ensembles select among them (MBR), they are not averaged or stacked
    fused_as_text = True

    # -- labels: one or more reference texts ----------------------------------------------------------
    def raw_labels(self, value: Any, where: str, field: str) -> list[str]:
        refs = [value] if isinstance(value, str) else value
        if not isinstance(refs, (list, tuple)) or not refs:
            raise DataError(
                f"{where} (field '{field}'): expected the target text (a string or a list of references), "
                f"got {str(value)[:60]!r}"
            )
        out = []
        for j, r in enumerate(refs):
            if not isinstance(r, str) or not r.strip():
                what = "the target" if isinstance(value, str) else f"reference {j}"
                raise DataError(f"{where} (field '{field}'): {what} is empty or not a string")
            out.append(r.strip())
        return out

    def encode_label(self, value: Any, vocab: list[str] | None, where: str, field: str, split: str) -> Any:
        return self.raw_labels(value, where, field)

    def num_outputs(self, vocab: list[str] | None) -> int:
        return 1  # the vocabulary size comes with the decoder (head_config)

    def head_config(
        self, task: Any, encoder_config: Any, tokenizer: Any, model: Any = None
    ) -> dict[str, Any]:
        """The decoder. An encoder-decoder checkpoint (T5, BART, ...): its own pretrained decoder and LM head
        (head ``seq2seq_lm``; ``model.decoder``: one per task, or ``shared`` by every generation task) with
        its decoding tokens. A BERT encoder: the encoder's own config as a BERT decoder with cross-attention
        (warm-started from the encoder's weights when the model is built), one per task. Both with the
        target's label smoothing."""
        from mtfuse.model.seq2seq import generation_tokens, is_seq2seq_config

        if encoder_config is None or tokenizer is None:
            raise MtfuseError(
                f"task '{task.name}': a generation head needs the encoder's config and tokenizer"
            )
        mode = getattr(model, "decoder", "per_task") if model is not None else "per_task"
        config = encoder_config.to_dict()
        for key in ("architectures", "_name_or_path", "transformers_version"):
            config.pop(key, None)
        if is_seq2seq_config(encoder_config):
            decoder = {
                "arch": "seq2seq",
                "shared": mode == "shared",
                "config": config,
                "generation": generation_tokens(encoder_config),
                "label_smoothing": settings(task).label_smoothing,
            }
            return {"head": "seq2seq_lm", "num_outputs": int(encoder_config.vocab_size), "decoder": decoder}
        if getattr(encoder_config, "model_type", "") != "bert":
            raise MtfuseError(
                f"task '{task.name}': generation warm-starts a BERT decoder from the encoder, but the encoder of "
                f"model.name_or_path (model type '{getattr(encoder_config, 'model_type', '?')}') is not a BERT "
                "encoder (BERT / MiniLM checkpoints such as the packaged default work, and encoder-decoder "
                "checkpoints (T5, BART, ...) bring their own decoder; the from-scratch lstm encoder is not "
                "supported)"
            )
        if mode == "shared":
            raise ConfigError(
                "model.decoder: 'shared' needs an encoder-decoder checkpoint (T5, BART, ...); the decoders "
                "warm-started from a BERT encoder are one per task (use per_task)"
            )
        decoder = {
            "arch": "bert",
            "config": {**config, "is_decoder": True, "add_cross_attention": True},
            "label_smoothing": settings(task).label_smoothing,
            **special_tokens(tokenizer),
        }
        return {"num_outputs": int(encoder_config.vocab_size), "decoder": decoder}

    def majority_predictions(
        self, gold_train: list[Any], gold: list[Any], labels: list[str] | None
    ) -> list[Any]:
        """The most frequent train target (its first reference), for every example."""
        top = Counter(g[0] for g in gold_train).most_common(1)[0][0]
        return [top] * len(gold)

    def metric_fits_labels(self, metric: str, labels: list[str] | None) -> bool:
        return True

    def describe(self, task: Any, split: str) -> dict[str, Any]:
        """Target lengths in tokens (with the end token) and how many targets ``max_target_length`` cuts."""
        enc = task.splits[split]
        targets = enc.extra.get("targets")
        if not targets:
            return {}
        lengths = np.array([len(t) for t in targets])
        return {
            "target_tokens_mean": round(float(lengths.mean()), 1),
            "target_tokens_p95": int(np.percentile(lengths, 95)),
            "target_tokens_max": int(lengths.max()),
            "targets_truncated": int(sum(enc.extra["target_cut"])),
        }

    # -- encoding and batches ----------------------------------------------------------------------------
    def _sources(self, rows: list[dict], task: Any) -> list[tuple[str, ...]]:
        gen = settings(task)
        out = []
        for row in rows:
            vals = []
            for k, f in enumerate(task.text_fields):
                v = row[f]
                if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
                    v = gen.source_join.join(x.strip() for x in v)
                if not isinstance(v, str) or not v.strip():
                    raise DataError(f"{row['_where']} (field '{f}'): empty source text, or not a string")
                vals.append((gen.prefix + v.strip()) if k == 0 and gen.prefix else v.strip())
            out.append(tuple(vals))
        return out

    def encode_rows(
        self, rows: list[dict], task: Any, split: str, tokenizing: Any, with_labels: bool
    ) -> tuple[Any, list[Any] | None]:
        from mtfuse.tasks.features import Encoded

        gen = settings(task)
        refs = (
            [self.raw_labels(r[task.label_field], r["_where"], task.label_field) for r in rows]
            if with_labels
            else None
        )
        if refs is not None and split == "train" and gen.train_references == "each":
            pairs = [(row, [ref]) for row, rs in zip(rows, refs, strict=True) for ref in rs]
            rows, refs = [p[0] for p in pairs], [p[1] for p in pairs]
        src = tokenizing.encode(self._sources(rows, task), False, task.cfg.max_length)
        enc = Encoded(src.input_ids, src.token_type_ids, None)
        enc.extra["tokenizer"] = tokenizing.tok  # decoding turns ids back into text
        if refs is None:
            return enc, None
        tgt = tokenizing.encode([(r[0],) for r in refs], False, gen.max_target_length)
        tokens = special_tokens(tokenizing.tok)
        enc.extra["targets"] = [_target(ids, tokens) for ids in tgt.input_ids]
        enc.extra["target_cut"] = [len(ids) >= gen.max_target_length for ids in tgt.input_ids]
        enc.labels = enc.extra["targets"]
        return enc, refs

    def collate(
        self, enc: Any, idx: list[int], pad_id: int, draw: tuple[int, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        batch = pad_inputs(enc.input_ids, enc.token_type_ids, idx, pad_id)
        targets = enc.extra.get("targets")
        if targets is not None:
            start = special_tokens(enc.extra["tokenizer"])["start_token_id"]
            m = max(len(targets[i]) for i in idx)
            labels = torch.full((len(idx), m), IGNORE_INDEX, dtype=torch.long)
            dec = torch.full((len(idx), m), pad_id, dtype=torch.long)
            dmask = torch.zeros((len(idx), m), dtype=torch.long)
            for r, i in enumerate(idx):
                y = torch.from_numpy(targets[i])
                labels[r, : len(y)] = y
                dec[r, 0] = start  # shifted right: the decoder sees the start token, then y[:-1]
                dec[r, 1 : len(y)] = y[:-1]
                dmask[r, : len(y)] = 1
            batch.update(labels=labels, decoder_input_ids=dec, decoder_attention_mask=dmask)
        return batch

    # -- training ------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy per target token (padding ignored), averaged over the batch's target tokens."""
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            label_smoothing=label_smoothing,
        )

    # -- decoding -------------------------------------------------------------------------------------
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
        """Generated text and the mean token log-probability of each example, in input order."""
        from transformers import GenerationConfig
        from transformers.modeling_outputs import BaseModelOutput

        core = getattr(model, "module", model)  # DDP-wrapped during training
        head = core.heads[task.name]
        gen = settings(task)
        tok = enc.extra["tokenizer"]
        view = head.seq2seq_view(core.encoder)
        gc = GenerationConfig(
            **head.generation_tokens(),  # the decoder's own start, end, padding (and forced) tokens
            max_new_tokens=gen.max_new_tokens,
            num_beams=gen.num_beams,
            length_penalty=gen.length_penalty,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            do_sample=gen.do_sample,
            top_k=gen.top_k if gen.do_sample else None,
            top_p=gen.top_p if gen.do_sample else None,
            early_stopping=gen.num_beams > 1,
        )
        was = core.training
        core.eval()
        lengths = np.array([len(x) for x in enc.input_ids])
        order = np.argsort(-lengths, kind="stable")  # long first: less padding, early OOM
        texts: list[Any] = [None] * len(enc)
        scores: list[Any] = [None] * len(enc)
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = [int(i) for i in order[start : start + batch_size]]
            batch = self.collate(_sources_only(enc), idx, pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            rng = torch.random.fork_rng(devices=[]) if gen.do_sample else contextlib.nullcontext()
            with torch.no_grad(), autocast(), rng:
                if gen.do_sample:
                    torch.manual_seed(gen.seed + b)  # the same samples every run
                hidden, _ = core.encode(batch, task.name)
                seqs = view.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                    attention_mask=batch["attention_mask"],
                    generation_config=gc,
                )
                logp = _mean_logprob(head, hidden, batch["attention_mask"], seqs, head.tokens)
            for r, i in enumerate(idx):
                texts[i] = tok.decode(seqs[r, 1:], skip_special_tokens=True).strip()
                scores[i] = float(logp[r])
        core.train(was)
        return texts, scores

    def score(self, task: Any, preds: list[Any], gold: list[Any]) -> dict[str, float]:
        from mtfuse.metrics import METRICS

        return {m: METRICS.get(m)(preds, gold) for m in task.metrics}

    # -- records --------------------------------------------------------------------------------------
    def record(self, pred: Any, prob: Any, labels: list[str] | None) -> dict[str, Any]:
        """The generated text and its score (mean log-probability per token)."""
        rec: dict[str, Any] = {"text": pred}
        if prob is not None:
            rec["logprob"] = round(float(prob), 4)
        return rec

    def gold_record(self, gold: Any, labels: list[str] | None) -> Any:
        return list(gold)

    def same_gold(self, a: Any, b: Any) -> bool:
        return list(a) == list(b)

    # -- fusion -------------------------------------------------------------------------------------
    def text_of(self, record: dict[str, Any], where: str) -> str:
        """A prediction record's generated text (what MBR selects among)."""
        text = record.get("text")
        if not isinstance(text, str):
            raise MtfuseError(f"{where}: no generated 'text' in the record")
        return text

    def outputs(self, record: dict[str, Any], labels: list[str] | None, where: str) -> np.ndarray:
        """One unit without columns: the outputs are texts (:meth:`text_of`), selected among by MBR
        (``mtfuse.fusion.ensemble.texts``), never averaged."""
        self.text_of(record, where)
        return np.zeros((1, 0))

    def fisher_log_likelihood(
        self, logits: torch.Tensor, labels: torch.Tensor, mode: str, gen: torch.Generator
    ) -> torch.Tensor:
        """log p(y | x) summed over the target tokens (padding, -100, left out)."""
        from mtfuse.tasks.types.base import _categorical_ll

        flat = labels.reshape(-1).to(logits.device)
        keep = flat != IGNORE_INDEX
        logp = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])[keep]
        return _categorical_ll(logp, flat[keep], mode, gen)


def _target(ids: np.ndarray, tokens: dict[str, int]) -> np.ndarray:
    """A tokenised target without its leading start token, ending with the end token (also when cut)."""
    ids = ids[1:] if len(ids) and ids[0] == tokens["start_token_id"] else ids
    if not len(ids) or ids[-1] != tokens["eos_token_id"]:
        ids = np.concatenate([ids, [tokens["eos_token_id"]]])
    return ids.astype(np.int64)


def _sources_only(enc: Any) -> Any:
    from mtfuse.tasks.features import Encoded

    out = Encoded(enc.input_ids, enc.token_type_ids, None)
    out.extra = {k: v for k, v in enc.extra.items() if k != "targets"}
    return out


def _mean_logprob(
    head: Any, hidden: torch.Tensor, mask: torch.Tensor, seqs: torch.Tensor, tokens: dict[str, int]
) -> torch.Tensor:
    """Mean log-probability per generated token (up to and with the end token) under teacher forcing."""
    dec_in, target = seqs[:, :-1], seqs[:, 1:]
    eos, pad = tokens["eos_token_id"], tokens["pad_token_id"]
    ended = torch.cumsum((target == eos).long(), dim=1)
    keep = (ended == 0) | ((ended == 1) & (target == eos))  # tokens before the end, and the end itself
    if pad != eos:
        keep &= ~((target == pad) & (ended > 0))
    logits = head(hidden, mask, None, batch={"decoder_input_ids": dec_in, "decoder_attention_mask": None})
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (lp * keep).sum(1) / keep.sum(1).clamp(min=1)
