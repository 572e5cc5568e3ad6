"""The masked_lm task type: BERT's 80/10/10 masking (statistics, seeding, resume), the loss on the chosen
positions, the tied decoder through save / load, the checkpoint's own MLM head, perplexity against a hand
computation, and a multi-task run through the CLI whose dev perplexity falls."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtfuse.batching import pad_inputs
from mtfuse.config import RunConfig
from mtfuse.evaluate import predict_encoded, score
from mtfuse.metrics import METRICS, aggregate, task_score
from mtfuse.model import MultiTaskModel, load_encoder
from mtfuse.tasks.features import TaskData, collate
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.train import train
from mtfuse.training.setup import head_specs
from mtfuse.weighting import WEIGHTINGS
from tests.helpers.cli import run_cli

WORDS = "the film was good and bad plot actor great dull scene city river house green small old new".split()


def _lines(rng: random.Random, n: int, words: int) -> str:
    return "".join(" ".join(rng.choice(WORDS) for _ in range(words)) + "\n" for _ in range(n))


def _corpus(folder: Path, n_train: int = 40, n_dev: int = 20, words: int = 8) -> Path:
    """train.txt / dev.txt of random sentences over WORDS (each word is one word piece): format 'lines'."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    (folder / "train.txt").write_text(_lines(rng, n_train, words), encoding="utf-8")
    (folder / "dev.txt").write_text(_lines(rng, n_dev, words), encoding="utf-8")
    return folder


def _config(tmp_path: Path, model_dir: Path, data: Path, **task: object) -> RunConfig:
    spec = {"name": "mlm", "type": "masked_lm", "data": {"format": "lines", "path": str(data)}, **task}
    return RunConfig.model_validate(
        {"tasks": [spec], "model": {"name_or_path": str(model_dir)}, "cache_dir": str(tmp_path / "cache")}
    )


def _task(cfg: RunConfig, tok: object, splits: tuple[str, ...] = ("train", "dev")) -> TaskData:
    return prepare_tasks(cfg, tok, list(splits))["mlm"]


def _model(cfg: RunConfig, model_dir: Path) -> tuple[MultiTaskModel, object, TaskData]:
    encoder, tok = load_encoder(str(model_dir))
    task = _task(cfg, tok)
    torch.manual_seed(0)
    model = MultiTaskModel.build(encoder, head_specs({"mlm": task}, cfg, 0.0, encoder.config, tok))
    return model.eval(), tok, task


def _every_position(model: MultiTaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's logits at every position [B, T, V] (a batch without ``mlm_mask``)."""
    return model("mlm", {k: v for k, v in batch.items() if k not in ("mlm_mask", "labels")})


# ---------------------------------------------------------------------------------------------- masking


def test_masking_follows_bert_statistics(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _corpus(tmp_path / "data", n_train=400, n_dev=4, words=25)
    _, tok = load_encoder(str(tiny_model_dir))
    task = _task(_config(tmp_path, tiny_model_dir, data), tok)
    enc = task.splits["train"]
    idx = list(range(len(enc)))
    special_ids = torch.tensor(sorted(set(tok.all_special_ids)))
    original = pad_inputs(enc.input_ids, None, idx, tok.pad_token_id)
    never = torch.isin(original["input_ids"], special_ids) | original["attention_mask"].eq(0)
    assert int((~never).sum()) >= 9000  # enough tokens for tight tolerances

    for draw in ((7, 0), None):  # a training draw, and the fixed masks of evaluation
        batch = collate(enc, idx, tok.pad_token_id, task.type, draw)
        chosen, inputs = batch["mlm_mask"], batch["input_ids"]
        assert not (chosen & never).any()  # [CLS], [SEP] and padding are never chosen
        assert torch.equal(batch["labels"], original["input_ids"][chosen])  # targets: the original ids
        assert torch.equal(inputs[~chosen], original["input_ids"][~chosen])  # the rest is untouched
        share = float(chosen.sum()) / float((~never).sum())
        assert 0.14 <= share <= 0.16, share
        picked, was = inputs[chosen], original["input_ids"][chosen]
        masked = picked.eq(tok.mask_token_id)
        kept = picked.eq(was) & ~masked
        replaced = ~masked & ~kept
        n = float(chosen.sum())
        assert 0.77 <= float(masked.sum()) / n <= 0.83
        assert 0.075 <= float(kept.sum()) / n <= 0.125
        assert 0.075 <= float(replaced.sum()) / n <= 0.125


def test_masks_are_seeded_by_draw_and_fixed_by_text(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _corpus(tmp_path / "data")
    _, tok = load_encoder(str(tiny_model_dir))
    cfg = _config(tmp_path, tiny_model_dir, data)
    task = _task(cfg, tok)
    enc, pad, tt = task.splits["train"], tok.pad_token_id, task.type
    idx = list(range(12))

    def masks(i: list[int], draw: tuple[int, ...] | None, e: object = enc) -> torch.Tensor:
        b = collate(e, i, pad, tt, draw)
        return torch.where(b["mlm_mask"], b["input_ids"], -1)  # the masked inputs at the chosen positions

    assert torch.equal(masks(idx, (3, 0)), masks(idx, (3, 0)))  # the same draw, the same masks
    assert not torch.equal(masks(idx, (3, 0)), masks(idx, (3, 1)))  # the next epoch masks afresh
    assert not torch.equal(masks(idx, (3, 0)), masks(idx, (4, 0)))  # another seed too
    one = masks([5], (3, 0))
    assert torch.equal(one[0], masks(idx, (3, 0))[5, : one.shape[1]])  # whatever batch the example is in

    # the fixed masks (evaluation) are those of the text: a fresh encoding, or a subset, masks it the same
    fixed = masks(idx, None)
    assert torch.equal(fixed, masks(idx, None, _task(cfg, tok).splits["train"]))
    sub = cfg.model_copy(update={"subset": cfg.subset.model_copy(update={"train": 5})})
    small = _task(sub, tok).splits["train"]
    full_rows = {tuple(x.tolist()): i for i, x in enumerate(enc.input_ids)}
    for j, ids in enumerate(small.input_ids):
        i = full_rows[tuple(ids.tolist())]
        assert np.array_equal(small.labels[j], enc.labels[i])
    other = _config(tmp_path, tiny_model_dir, data, masked_lm={"eval_seed": 1})
    assert not torch.equal(fixed, masks(idx, None, _task(other, tok).splits["train"]))


def test_a_resumed_run_masks_and_trains_as_an_uninterrupted_one(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _corpus(tmp_path / "data", n_train=24, n_dev=8)
    cfg = {
        "tasks": [{"name": "mlm", "type": "masked_lm", "data": {"format": "lines", "path": str(data)}}],
        "model": {"name_or_path": str(tiny_model_dir)},  # dropout on: the RNG state is resumed too
        "cache_dir": str(tmp_path / "cache"),
        "train": {
            "batch_size": 8,  # 3 batches an epoch: the 4 steps cross an epoch (new masks) after the resume
            "max_steps": 4,
            "lr": 1e-3,
            "checkpoint_every": 2,
            "eval_every": 4,
            "tensorboard": False,
            "progress": False,
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_cli(["train", path, "--output", ref])[0] == 0
    monkeypatch.setenv("MTFUSE_FAULT", "step:2")  # SIGTERM after step 2: checkpoint, exit 130
    monkeypatch.setenv("MTFUSE_FAULT_SIGNAL", "TERM")
    assert run_cli(["train", path, "--output", cut])[0] == 130
    monkeypatch.delenv("MTFUSE_FAULT")
    code, out, err = run_cli(["train", path, "--output", cut, "--resume"])
    assert code == 0, out + err
    for name in ("model/model.safetensors", "model/heads.safetensors"):
        got, want = load_file(str(cut / name)), load_file(str(ref / name))
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert json.loads((cut / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())


# ---------------------------------------------------------------------------------- loss, head, metrics


def test_the_loss_is_the_cross_entropy_of_the_chosen_positions(tmp_path: Path, tiny_model_dir: Path) -> None:
    model, tok, task = _model(_config(tmp_path, tiny_model_dir, _corpus(tmp_path / "data")), tiny_model_dir)
    batch = collate(task.splits["train"], list(range(8)), tok.pad_token_id, task.type, (1, 0))
    with torch.no_grad():
        loss = task.type.loss(model("mlm", batch), batch["labels"])
        full = _every_position(model, batch)
    rows, cols = batch["mlm_mask"].nonzero(as_tuple=True)
    assert len(rows) == len(batch["labels"]) > 0
    by_hand = [
        float(torch.logsumexp(full[r, c], 0) - full[r, c, y])
        for r, c, y in zip(rows.tolist(), cols.tolist(), batch["labels"].tolist(), strict=True)
    ]
    assert float(loss) == pytest.approx(float(np.mean(by_hand)), rel=1e-5)
    # what BertForMaskedLM computes: cross-entropy over [B, T, V] with -100 on every unchosen position
    labels = torch.full(batch["input_ids"].shape, -100)
    labels[batch["mlm_mask"]] = batch["labels"]
    hf = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert float(loss) == pytest.approx(float(hf), rel=1e-5)


def test_the_decoder_is_the_word_embeddings_before_and_after_saving(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    model, tok, _ = _model(_config(tmp_path, tiny_model_dir, _corpus(tmp_path / "data")), tiny_model_dir)

    def tied(m: MultiTaskModel) -> bool:
        dec, emb = m.heads["mlm"].decoder.weight, m.encoder.get_input_embeddings().weight
        return dec is emb and dec.data_ptr() == emb.data_ptr()

    assert tied(model)
    assert not {n for n, _ in model.task_named_parameters("mlm")} & {"heads.mlm.decoder.weight"}
    before = float(model.heads["mlm"].decoder.weight[7, 3].detach())
    with torch.no_grad():
        model.encoder.get_input_embeddings().weight[7, 3] += 1.0  # one storage: the decoder changes too
    assert float(model.heads["mlm"].decoder.weight[7, 3].detach()) == pytest.approx(before + 1.0)
    model.save(tmp_path / "saved", tok)
    heads = load_file(str(tmp_path / "saved" / "heads.safetensors"))
    assert "mlm.decoder.weight" not in heads and "mlm.bias" in heads  # stored once, with the encoder
    loaded, _ = MultiTaskModel.load(tmp_path / "saved")
    assert tied(loaded)
    for k, v in model.heads["mlm"].state_dict().items():
        assert torch.equal(loaded.heads["mlm"].state_dict()[k], v), k
    emb = loaded.encoder.get_input_embeddings().weight
    assert torch.equal(emb, model.encoder.get_input_embeddings().weight)


def test_the_checkpoint_s_own_mlm_head_is_loaded(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        mlm = BertForMaskedLM(config)
        with torch.no_grad():  # away from the fresh head's initialisation (LayerNorm 1 / 0, bias 0)
            for p in mlm.cls.predictions.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    ckpt = tmp_path / "bert-mlm"
    mlm.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    mlm.eval()
    model, tok, task = _model(_config(tmp_path, ckpt, _corpus(tmp_path / "data")), ckpt)
    head, theirs = model.heads["mlm"], mlm.cls.predictions
    assert torch.equal(head.transform.dense.weight, theirs.transform.dense.weight)
    assert torch.equal(head.transform.dense.bias, theirs.transform.dense.bias)
    assert torch.equal(head.transform.LayerNorm.weight, theirs.transform.LayerNorm.weight)
    assert torch.equal(head.transform.LayerNorm.bias, theirs.transform.LayerNorm.bias)
    assert torch.equal(head.bias, theirs.bias)
    assert torch.equal(head.decoder.weight, mlm.bert.embeddings.word_embeddings.weight)
    assert head.decoder.weight is model.encoder.get_input_embeddings().weight
    # and it predicts what BertForMaskedLM predicts at the masked positions
    batch = collate(task.splits["dev"], list(range(4)), tok.pad_token_id, task.type)
    with torch.no_grad():
        ours = model("mlm", batch)
        ref = mlm(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert torch.allclose(ours, ref[batch["mlm_mask"]], atol=1e-5)

    # a checkpoint without one (a plain BertModel) gets a fresh head: LayerNorm at 1, bias at 0
    fresh, _, _ = _model(_config(tmp_path, tiny_model_dir, tmp_path / "data"), tiny_model_dir)
    assert torch.equal(fresh.heads["mlm"].bias, torch.zeros_like(fresh.heads["mlm"].bias))
    assert torch.equal(fresh.heads["mlm"].transform.LayerNorm.weight, torch.ones(32))


def test_perplexity_is_the_exp_of_the_mean_cross_entropy(tmp_path: Path, tiny_model_dir: Path) -> None:
    model, tok, task = _model(_config(tmp_path, tiny_model_dir, _corpus(tmp_path / "data")), tiny_model_dir)
    enc = task.splits["dev"]
    preds, probs = predict_encoded(model, task, enc, 7, torch.device("cpu"), tok.pad_token_id)
    got = score(task, preds, task.gold["dev"])
    nll = []
    for i in range(len(enc)):  # one example at a time, every position, the fixed mask's chosen ones
        batch = collate(enc, [i], tok.pad_token_id, task.type)
        with torch.no_grad():
            logp = torch.log_softmax(_every_position(model, batch)[0], -1)
        for pos, y in zip(
            batch["mlm_mask"][0].nonzero().flatten().tolist(), batch["labels"].tolist(), strict=True
        ):
            nll.append(-float(logp[pos, y]))
    assert len(nll) == sum(len(g) for g in task.gold["dev"]) > 0
    assert got["mlm_loss"] == pytest.approx(float(np.mean(nll)), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(float(np.mean(nll))), rel=1e-5)
    vocab = model.encoder.config.vocab_size
    assert vocab / 3 < got["perplexity"] < 3 * vocab  # a random model is about uniform over the vocabulary
    # records: the chosen positions' gold tokens, top fillers and NLLs
    rec = task.type.record(preds[1], probs[1], None)
    assert len(rec["predicted"]) == len(rec["nll"]) == len(task.gold["dev"][1]) == len(rec["fillers"])
    assert all(len(f) == 5 for f in rec["fillers"])


def test_perplexity_is_pooled_and_lower_is_better() -> None:
    nll = [[1.0], [3.0, 3.0]]
    assert METRICS.get("mlm_loss")(nll, [["a"], ["b", "c"]]) == pytest.approx(7 / 3)
    assert METRICS.get("perplexity")(nll, None) == pytest.approx(math.exp(7 / 3))  # not a mean of exps
    with pytest.raises(ValueError):
        METRICS.get("perplexity")(nll, [["a"], ["b"]])
    # selection, averages and compare all take task scores: the lower perplexity scores higher
    assert task_score({"perplexity": 20.0}) == pytest.approx(5.0)
    assert task_score({"perplexity": 10.0}) > task_score({"perplexity": 20.0})
    assert task_score({"perplexity": 10.0, "mlm_loss": math.log(10.0)}) == pytest.approx(10.0)
    assert aggregate({"a": {"accuracy": 60.0}, "b": {"perplexity": 50.0}}) == pytest.approx(31.0)


# ------------------------------------------------------------------------------------------- end to end


def _multitask_config(tmp_path: Path, model_dir: Path, train_cfg: dict[str, object]) -> Path:
    """A classification task and a masked_lm task on the same jsonl files (its own sentences)."""
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 64), ("dev", 24)):
        rows = []
        for _ in range(n):
            s = [rng.choice(WORDS) for _ in range(8)]
            rows.append({"text": " ".join(s), "label": "pos" if s.count("good") >= s.count("bad") else "neg"})
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        files[split] = str(path)
    data = {"format": "jsonl", "files": files}
    cfg = {
        "tasks": [
            {
                "name": "cls",
                "type": "classification",
                "data": data,
                "text_fields": ["text"],
                "label_field": "label",
            },
            {
                "name": "mlm",
                "type": "masked_lm",
                "data": data,
                "text_fields": ["text"],
                "masked_lm": {"top_k": 3},
            },
        ],
        "model": {"name_or_path": str(model_dir)},
        "cache_dir": str(tmp_path / "cache"),
        "train": {"batch_size": 8, "lr": 1e-3, "tensorboard": False, "progress": False, **train_cfg},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_multitask_training_through_the_cli_lowers_dev_perplexity(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    train_cfg = {"max_steps": 60, "eval_every": 15, "select": "best", "lr": 1e-2}
    cfg = _multitask_config(tmp_path, tiny_model_dir, train_cfg)
    run = tmp_path / "run"
    code, out, err = run_cli(["train", cfg, "--output", run])
    assert code == 0, out + err
    evals = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    ppl = [e["metrics"]["mlm"]["perplexity"] for e in evals]
    # a random model starts near the vocabulary size (30522: test_perplexity_is_the_exp_of_the_mean_cross_entropy);
    # the text has 18 words
    assert len(ppl) == 4 and ppl[-1] < ppl[0] / 10 and ppl[-1] < 100, ppl
    final = json.loads((run / "metrics.json").read_text())
    assert set(final["tasks"]["mlm"]) == {"perplexity", "mlm_loss"}
    assert final["tasks"]["mlm"]["perplexity"] == pytest.approx(math.exp(final["tasks"]["mlm"]["mlm_loss"]))
    best = max(evals, key=lambda e: e["average"])  # select: best keeps the best average of task scores
    assert json.loads((run / "results.json").read_text())["best_step"] == best["step"]

    # predict: the input's [MASK] tokens filled with the top-k fillers
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"text": "the film was [MASK] and the plot was [MASK]"}) + "\n")
    code, out, err = run_cli(
        ["predict", run, "--task", "mlm", "--input", inp, "--output", tmp_path / "p.jsonl"]
    )
    assert code == 0, out + err
    (rec,) = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rec["fillers"]) == 2 and all(len(f) == 3 for f in rec["fillers"])
    assert rec["predicted"] == [f[0]["token"] for f in rec["fillers"]]
    assert "[MASK]" not in rec["text"] and rec["text"].startswith("the film was")

    # data check describes the task: examples, token lengths, masked tokens
    code, out, err = run_cli(["data", "check", cfg, "--json"])
    assert code == 0, out + err
    dev = json.loads(out)["mlm"]["dev"]
    assert dev["examples"] == 24 and dev["tokens_max"] == 10
    assert dev["masked_tokens"] > 0 and 0.05 < dev["masked_share"] < 0.3


LOSS_LEVEL = [n for n in WEIGHTINGS.names() if not WEIGHTINGS.get(n).is_gradient_method]


@pytest.mark.parametrize(
    "extra",
    [{"step_mode": "sampled"}, *[{"step_mode": "joint", "weighting": m} for m in LOSS_LEVEL]]
    + [{"step_mode": "joint", "weighting": "pcgrad"}],
    ids=lambda e: f"{e['step_mode']}-{e.get('weighting', 'static')}",
)
def test_masked_lm_trains_beside_a_supervised_task(tmp_path: Path, tiny_model_dir: Path, extra: dict) -> None:
    from mtfuse import config as config_mod

    path = _multitask_config(tmp_path, tiny_model_dir, {"max_steps": 2, "eval_every": 2})
    overrides = [f"train.step_mode={extra['step_mode']}"]
    if "weighting" in extra:
        overrides.append(f"weighting.method={extra['weighting']}")
    final = train(config_mod.load(path, overrides), tmp_path / "run")
    assert math.isfinite(final["average"]) and math.isfinite(final["tasks"]["mlm"]["perplexity"])


def test_the_baseline_is_a_smoothed_unigram_model() -> None:
    from mtfuse.tasks.types import TASK_TYPES

    tt = TASK_TYPES.get("masked_lm")
    preds = tt.majority_predictions([["a", "b"], ["a"]], [["a", "b"], ["c"]], None)
    # train counts a: 2, b: 1 (3 tokens, 2 types + 1 for every other): p(a) = 3/6, p(b) = 2/6, p(c) = 1/6
    assert preds[0]["nll"] == pytest.approx([-math.log(3 / 6), -math.log(2 / 6)])
    assert preds[1]["nll"] == pytest.approx([-math.log(1 / 6)])
    assert preds[0]["tokens"] == ["a", "a"]


def test_the_config_checks_the_masked_lm_section(tmp_path: Path, tiny_model_dir: Path) -> None:
    from mtfuse.config import from_dict
    from mtfuse.errors import ConfigError

    data = {"format": "lines", "path": str(_corpus(tmp_path / "data"))}

    def cfg(**task: object) -> dict:
        return {"tasks": [{"name": "t", "type": "masked_lm", "data": data, **task}]}

    from_dict(cfg())  # no label field needed
    with pytest.raises(ConfigError, match="at most 1"):
        from_dict(cfg(masked_lm={"mask_replace_prob": 0.95, "random_replace_prob": 0.1}))
    with pytest.raises(ConfigError, match="does not fit task type 'masked_lm'"):
        from_dict(cfg(metrics=["accuracy"]))
    with pytest.raises(ConfigError, match="applies to tasks of type 'masked_lm'"):
        from_dict({"tasks": [{"name": "t", "type": "classification", "data": data, "masked_lm": {}}]})
