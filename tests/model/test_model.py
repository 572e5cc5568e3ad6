"""mtfuse.model: encoder loading, heads, pooling, MultiTaskModel forward/save/load (tiny random BERT)."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BertForSequenceClassification, BertForTokenClassification, BertModel

from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model import (
    HEADS,
    HEADS_JSON,
    HEADS_WEIGHTS,
    HeadSpec,
    MultiTaskModel,
    load_encoder,
    pool,
    resolve_model_path,
)
from mtfuse.model.encoder import default_pooling
from mtfuse.model.heads import build_head
from mtfuse.tasks.types import TASK_TYPES

SPECS = {
    "sent": HeadSpec("sent", "classification", "classification", 3, "pooler", 0.1, ["a", "b", "c"]),
    "score": HeadSpec("score", "regression", "regression", 1, "mean", 0.1),
    "tags": HeadSpec("tags", "multilabel", "multilabel", 4, "cls", 0.1, ["w", "x", "y", "z"]),
    "ner": HeadSpec("ner", "token_classification", "token_classification", 5, "pooler", 0.1),
}


@pytest.fixture
def model_and_tokenizer(tiny_model_dir: Path):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = MultiTaskModel.build(encoder, SPECS)
    return model.eval(), tokenizer


@pytest.fixture
def batch(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    enc = tokenizer(
        ["hello world", "a somewhat longer sentence that needs no padding"],
        ["second text", "pair"],
        padding=True,
        return_tensors="pt",
    )
    out = dict(enc)
    out["labels"] = torch.tensor([0, 2])  # extra keys must not reach the encoder
    return out


@pytest.fixture
def saved_dir(model_and_tokenizer, tmp_path: Path) -> Path:
    model, tokenizer = model_and_tokenizer
    model.save(tmp_path / "model", tokenizer)
    return tmp_path / "model"


# ------------------------------------------------------------------------------------------ encoder


def test_resolve_default_is_packaged_minilm() -> None:
    path = Path(resolve_model_path("default"))
    assert path.is_dir() and (path / "config.json").is_file()


def test_resolve_passes_local_dirs_and_hub_names(tiny_model_dir: Path) -> None:
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"


def test_load_encoder_local_dir(tiny_model_dir: Path) -> None:
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    assert encoder.config.hidden_size == 32
    assert tokenizer.is_fast and len(tokenizer) == 30522


def test_load_encoder_offline_hub_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MtfuseError, match=r"nobody-xyz/no-such-model.*not a local directory.*offline\?"):
        load_encoder("nobody-xyz/no-such-model")


def test_load_encoder_missing_dir_and_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(MtfuseError, match="no such directory"):
        load_encoder(str(tmp_path / "not" / "there"))
    with pytest.raises(MtfuseError, match="has no config.json"):
        load_encoder(str(tmp_path))


# ------------------------------------------------------------------------------------------ heads


def test_head_registry_names() -> None:
    assert HEADS.names() == [
        "classification",
        "intent_slots",
        "masked_lm",
        "multilabel",
        "multiple_choice",
        "regression",
        "seq2seq_decoder",
        "seq2seq_lm",
        "span_qa",
        "srl",
        "token_classification",
    ]


def test_head_output_shapes(model_and_tokenizer, batch) -> None:
    model, _ = model_and_tokenizer
    b, t = batch["input_ids"].shape
    out = model.forward_all(batch, model.tasks)
    assert out["sent"].shape == (b, 3)
    assert out["score"].shape == (b,)
    assert out["tags"].shape == (b, 4)
    assert out["ner"].shape == (b, t, 5)


def test_head_init_like_hf_bert() -> None:
    head = HEADS.get("classification")(64, 2, "cls", 0.0, 0.02)
    assert torch.count_nonzero(head.classifier.bias) == 0
    assert 0.01 < head.classifier.weight.std().item() < 0.03


def test_pool_mean_ignores_padding() -> None:
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = pool(hidden, mask, None, "mean")
    torch.testing.assert_close(got[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(got[1], hidden[1].mean(0))
    changed = hidden.clone()
    changed[0, 2:] = 1e6  # padding content must not matter
    torch.testing.assert_close(pool(changed, mask, None, "mean"), got)


def test_pool_cls_and_pooler() -> None:
    hidden = torch.randn(2, 4, 3)
    pooled = torch.randn(2, 3)
    assert torch.equal(pool(hidden, None, None, "cls"), hidden[:, 0])
    assert pool(hidden, None, pooled, "pooler") is pooled
    with pytest.raises(MtfuseError, match="no pooler.*cls or mean"):
        pool(hidden, None, None, "pooler")
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        pool(hidden, None, None, "max")


def test_pooler_head_uses_encoder_pooler_output(model_and_tokenizer, batch) -> None:
    model, _ = model_and_tokenizer
    hidden, pooled = model.encode(batch)
    ref = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])  # fmt: skip
    assert pooled is not None
    torch.testing.assert_close(pooled, ref.pooler_output)
    torch.testing.assert_close(hidden, ref.last_hidden_state)
    torch.testing.assert_close(model("sent", batch), model.heads["sent"].classifier(pooled))


def test_encoder_without_pooler_gives_clear_error(tiny_model_dir: Path, batch) -> None:
    encoder = BertModel.from_pretrained(str(tiny_model_dir), add_pooling_layer=False)
    model = MultiTaskModel.build(encoder, {"sent": SPECS["sent"]})
    with pytest.raises(MtfuseError, match="no pooler"):
        model("sent", batch)


def test_unknown_head_or_pooling_fails_at_build(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    with pytest.raises(ConfigError, match="unknown head 'nope'"):
        MultiTaskModel.build(model.encoder, {"x": HeadSpec("x", "classification", "nope", 2, "cls", 0.1)})
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        MultiTaskModel.build(
            model.encoder, {"x": HeadSpec("x", "classification", "classification", 2, "max", 0.1)}
        )


def test_matches_hf_sequence_and_token_classification(
    tiny_model_dir: Path, model_and_tokenizer, batch
) -> None:
    """With the same weights, our pooler + classification head is BertForSequenceClassification, and the token
    head is BertForTokenClassification."""
    model, _ = model_and_tokenizer
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    seq = BertForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=3).eval()
    seq.classifier.load_state_dict(model.heads["sent"].classifier.state_dict())
    torch.testing.assert_close(model("sent", batch), seq(**inputs).logits)
    tok = BertForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=5).eval()
    tok.classifier.load_state_dict(model.heads["ner"].classifier.state_dict())
    torch.testing.assert_close(model("ner", batch), tok(**inputs).logits)


def test_heads_follow_encoder_dtype(tiny_model_dir: Path) -> None:
    encoder, _ = load_encoder(str(tiny_model_dir))
    model = MultiTaskModel.build(encoder.to(torch.bfloat16), SPECS)
    assert all(p.dtype == torch.bfloat16 for p in model.heads.parameters())


# ------------------------------------------------------------------------------------------ model


def test_forward_equals_forward_all(model_and_tokenizer, batch) -> None:
    model, _ = model_and_tokenizer
    with torch.no_grad():
        together = model.forward_all(batch, ["sent", "ner", "score"])
        assert list(together) == ["sent", "ner", "score"]
        for task, logits in together.items():
            torch.testing.assert_close(model(task, batch), logits)


def test_forward_all_runs_the_encoder_once(model_and_tokenizer, batch) -> None:
    model, _ = model_and_tokenizer
    calls = []
    handle = model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        model.forward_all(batch, model.tasks)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_unknown_task_lists_tasks(model_and_tokenizer, batch) -> None:
    model, _ = model_and_tokenizer
    with pytest.raises(MtfuseError, match=r"unknown task 'nope'.*\[sent, score, tags, ner\]"):
        model("nope", batch)
    with pytest.raises(MtfuseError, match="unknown task 'nope'"):
        model.forward_all(batch, ["sent", "nope"])


def test_task_name_clashing_with_moduledict_attribute(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    with pytest.raises(MtfuseError, match="task name 'update'"):
        MultiTaskModel.build(
            model.encoder, {"update": HeadSpec("update", "c", "classification", 2, "cls", 0.1)}
        )


# ------------------------------------------------------------------------------------------ save / load


def test_save_layout(saved_dir: Path) -> None:
    names = {p.name for p in saved_dir.iterdir()}
    assert {"config.json", "model.safetensors", HEADS_WEIGHTS, HEADS_JSON, "tokenizer.json"} <= names
    assert not [n for n in names if ".tmp-" in n]
    meta = json.loads((saved_dir / HEADS_JSON).read_text())
    assert meta["format_version"] == 1
    assert [h["task"] for h in meta["heads"]] == list(SPECS)
    keys = set(load_file(str(saved_dir / HEADS_WEIGHTS)))
    assert "sent.classifier.weight" in keys and "ner.classifier.bias" in keys and len(keys) == 8


def test_save_load_round_trip(model_and_tokenizer, batch, saved_dir: Path) -> None:
    model, tokenizer = model_and_tokenizer
    loaded, loaded_tok = MultiTaskModel.load(saved_dir)
    assert not loaded.training
    assert loaded.specs == model.specs
    assert (
        loaded_tok is not None
        and loaded_tok("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    )
    with torch.no_grad():
        before = model.forward_all(batch, model.tasks)
        after = loaded.forward_all(batch, loaded.tasks)
    for task in model.tasks:
        assert torch.equal(before[task], after[task]), task


def test_saved_encoder_loads_with_plain_automodel(model_and_tokenizer, batch, saved_dir: Path) -> None:
    model, _ = model_and_tokenizer
    plain = AutoModel.from_pretrained(str(saved_dir)).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(plain(**inputs).last_hidden_state, model.encode(batch)[0])


def test_load_without_tokenizer_files(model_and_tokenizer, tmp_path: Path) -> None:
    model, _ = model_and_tokenizer
    model.save(tmp_path / "m")
    _, tokenizer = MultiTaskModel.load(tmp_path / "m")
    assert tokenizer is None


def _drop_tensor(d: Path) -> None:
    tensors = load_file(str(d / HEADS_WEIGHTS))
    del tensors["score.classifier.bias"]
    save_file(tensors, str(d / HEADS_WEIGHTS))


def _reshape_tensor(d: Path) -> None:
    tensors = load_file(str(d / HEADS_WEIGHTS))
    tensors["sent.classifier.weight"] = torch.zeros(7, 32)
    save_file(tensors, str(d / HEADS_WEIGHTS))


def _edit_json(d: Path, edit) -> None:
    meta = json.loads((d / HEADS_JSON).read_text())
    edit(meta)
    (d / HEADS_JSON).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("breakage", "file", "message"),
    [
        (lambda d: (d / HEADS_JSON).unlink(), HEADS_JSON, "missing"),
        (lambda d: (d / HEADS_JSON).write_text("{not json"), HEADS_JSON, "not valid JSON"),
        (lambda d: _edit_json(d, lambda m: m["heads"][1].pop("num_outputs")), HEADS_JSON, "num_outputs"),
        (lambda d: _edit_json(d, lambda m: m.update(format_version=9)), HEADS_JSON, "format_version"),
        (
            lambda d: _edit_json(d, lambda m: m["heads"][0].update(head="nope")),
            HEADS_JSON,
            "unknown head 'nope'",
        ),
        (lambda d: (d / HEADS_WEIGHTS).unlink(), HEADS_WEIGHTS, "missing"),
        (lambda d: (d / HEADS_WEIGHTS).write_bytes(b"garbage"), HEADS_WEIGHTS, "safetensors"),
        (_drop_tensor, HEADS_WEIGHTS, "missing tensor 'score.classifier.bias'"),
        (_reshape_tensor, HEADS_WEIGHTS, r"'sent.classifier.weight' has shape \[7, 32\]"),
    ],
    ids=[
        "no-json",
        "bad-json",
        "no-field",
        "version",
        "bad-head",
        "no-weights",
        "bad-weights",
        "no-tensor",
        "shape",
    ],
)
def test_load_errors_name_the_file(
    saved_dir: Path, tmp_path: Path, breakage, file: str, message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    breakage(broken)
    with pytest.raises(MtfuseError, match=message) as info:
        MultiTaskModel.load(broken)
    assert file in str(info.value)


# ------------------------------------------------------------------------------ default pooling (issue 15)


def _sentence_transformers_dir(root: Path, pooling: dict[str, bool] | str, folder: str = "1_Pooling") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": folder, "type": "sentence_transformers.models.Pooling"},
    ]
    (root / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (root / folder).mkdir(exist_ok=True)
    text = pooling if isinstance(pooling, str) else json.dumps({"word_embedding_dimension": 32, **pooling})
    (root / folder / "config.json").write_text(text, encoding="utf-8")
    return root


def test_default_pooling_of_the_packaged_encoder_is_mean() -> None:
    """all-MiniLM-L6-v2 was trained with mean pooling (its 1_Pooling/config.json); the pooler is untrained."""
    assert default_pooling("default") == "mean"
    assert default_pooling(resolve_model_path("default")) == "mean"


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean"),
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_max_tokens": True}, "pooler"),  # no equivalent here
        ("{not json", "pooler"),
        ("[1, 2]", "pooler"),
    ],
)
def test_default_pooling_reads_sentence_transformers_files(
    tmp_path: Path, pooling: dict[str, bool] | str, expected: str
) -> None:
    assert default_pooling(str(_sentence_transformers_dir(tmp_path / "st", pooling))) == expected


def test_default_pooling_falls_back_to_the_pooler(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert default_pooling(str(tiny_model_dir)) == "pooler"  # a plain Hugging Face directory
    assert default_pooling(str(tmp_path / "missing")) == "pooler"
    assert default_pooling("no-such-org/no-such-model-xyz") == "pooler"  # not in the local hub cache
    d = _sentence_transformers_dir(tmp_path / "nofolder", {"pooling_mode_cls_token": True})
    shutil.rmtree(d / "1_Pooling")
    assert default_pooling(str(d)) == "pooler"
    (d / "modules.json").write_text(
        '[{"type": "sentence_transformers.models.Transformer"}]', encoding="utf-8"
    )
    assert default_pooling(str(d)) == "pooler"


# --------------------------------------------------------------- standardised regression (issue 15)


def _hidden(b: int = 6, t: int = 4, h: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, h, generator=g), torch.ones(b, t, dtype=torch.long)


def test_regression_head_without_statistics_is_unchanged() -> None:
    """Heads saved before standardisation (no target_mean / target_std) give bit-identical outputs."""
    hidden, mask = _hidden()
    torch.manual_seed(3)
    head = HEADS.get("regression")(16, 1, "mean", 0.0)
    z = head.classifier(pool(hidden, mask, None, "mean")).squeeze(-1)
    assert torch.equal(head(hidden, mask, None), z)
    assert head.loss_kwargs() == {"target_std": 1.0}
    assert set(head.state_dict()) == {"classifier.weight", "classifier.bias"}  # heads.safetensors layout kept


def test_regression_head_answers_in_the_targets_units() -> None:
    hidden, mask = _hidden()
    torch.manual_seed(3)
    plain = HEADS.get("regression")(16, 1, "mean", 0.0)
    torch.manual_seed(3)
    head = HEADS.get("regression")(16, 1, "mean", 0.0, 0.02, target_mean=3.2, target_std=1.5)
    z = plain(hidden, mask, None)
    out = head(hidden, mask, None)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 3.2 + 1.5 * z)
    # a fresh head (weights ~ N(0, 0.02), zero bias) starts at the mean target, not at 0
    assert float((out.detach() - 3.2).abs().max()) < 0.5
    assert set(head.state_dict()) == {"classifier.weight", "classifier.bias"}
    assert "target_mean=3.2" in repr(head)


@pytest.mark.parametrize("bad", [{"target_std": 0.0}, {"target_std": -1.0}, {"target_mean": float("nan")}])
def test_regression_head_rejects_bad_statistics(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="target_"):
        HEADS.get("regression")(16, 1, "mean", 0.0, 0.02, **bad)


def test_build_head_reads_the_spec() -> None:
    old = HeadSpec("score", "regression", "regression", 1, "mean", 0.1)  # a spec without the fields
    head = build_head(old, 16)
    assert (head.target_mean, head.target_std) == (0.0, 1.0)
    new = types.SimpleNamespace(**{**vars(old), "target_mean": 2.0, "target_std": 0.5})
    head = build_head(new, 16)
    assert (head.target_mean, head.target_std) == (2.0, 0.5)
    assert isinstance(build_head(SPECS["sent"], 16), HEADS.get("classification"))
    assert build_head(SPECS["sent"], 16).loss_kwargs() == {}


def test_regression_loss_is_on_the_standardised_scale() -> None:
    reg = TASK_TYPES.get("regression")
    y = torch.tensor([1.0, 4.5, 2.0, 3.5, 5.0])
    stats = reg.head_options(y.tolist())
    mean, std = stats["target_mean"], stats["target_std"]
    assert mean == pytest.approx(float(y.mean())) and std == pytest.approx(float(y.std(unbiased=False)))
    z = torch.tensor([0.1, 0.9, -0.4, 0.2, 1.3], requires_grad=True)
    loss = reg.loss(mean + std * z, y, target_std=std)
    ref = torch.nn.functional.mse_loss(z, (y - mean) / std)
    torch.testing.assert_close(loss, ref)
    (gz,) = torch.autograd.grad(loss, z)
    (gref,) = torch.autograd.grad(torch.nn.functional.mse_loss(z, (y - mean) / std), z)
    torch.testing.assert_close(gz, gref)  # the optimisation sees the standardised problem
    assert reg.loss(y + 1.0, y) == pytest.approx(1.0)  # default: the plain squared error, as before
    # degenerate targets: std 1 (no division by zero)
    assert reg.head_options([2.0, 2.0, 2.0]) == {"target_mean": 2.0, "target_std": 1.0}
    assert reg.head_options([]) == {"target_mean": 0.0, "target_std": 1.0}


def test_standardised_head_fits_large_targets_quickly() -> None:
    """Targets far from 0 (mean 50, std 10): the standardised head starts at the mean and gets close in a few
    steps; the plain head, starting at 0, is still far (the collapse issue 15 saw on short runs)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 16, generator=g)
    y = 50.0 + 10.0 * (x[:, 0, :4].sum(-1) / 2.0)
    reg = TASK_TYPES.get("regression")
    mask = torch.ones(64, 1, dtype=torch.long)
    errors = {}
    for name, stats in (("plain", {}), ("standardised", reg.head_options(y.tolist()))):
        torch.manual_seed(0)
        head = HEADS.get("regression")(16, 1, "mean", 0.0, 0.02, **stats)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(30):
            opt.zero_grad()
            reg.loss(head(x, mask, None), y, **head.loss_kwargs()).backward()
            opt.step()
        with torch.no_grad():
            errors[name] = float(((head(x, mask, None) - y) ** 2).mean().sqrt())
    assert errors["standardised"] < 5.0 < 40.0 < errors["plain"]
