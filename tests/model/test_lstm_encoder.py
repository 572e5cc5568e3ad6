"""The from-scratch embedding + (Bi)LSTM encoder (``model.name_or_path: lstm``): a Hugging Face model that saves
and loads in safetensors, padding-invariant, seeded; trains with every head and hard/soft/mmoe sharing through
the CLI, learns an easy multi-task problem, merges only with runs from its init, exports to ONNX; and the
errors for what it cannot do (adapters, generation, bad model.lstm fields)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

from mtfuse import rundir
from mtfuse.config import LstmConfig
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model import HeadSpec, MultiTaskModel, load_encoder
from mtfuse.model.lstm import LSTM_MODEL_TYPE, LstmEncoder
from tests.helpers.cli import fails, run_cli
from tests.test_task_type_contract import DATA

TINY = {"embedding_dim": 12, "hidden_size": 8}  # model.lstm of the CLI runs: a few thousand LSTM weights


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny LSTM steps are a chain of small matrix products: with two threads on a busy machine the threads'
    synchronisation takes 100x the compute. One thread keeps these tests fast whatever else runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _encoder(**opts: Any) -> tuple[LstmEncoder, Any]:
    encoder, tokenizer = load_encoder("lstm", LstmConfig(**{**TINY, "init_seed": 0, **opts}))
    assert isinstance(encoder, LstmEncoder)
    return encoder.eval(), tokenizer


def ok(*argv: object) -> str:
    code, out, err = run_cli(list(argv))
    assert code == 0, f"mtfuse {' '.join(map(str, argv))}: exit {code}\n{out}\n{err}"
    return out


# ------------------------------------------------------------------------------------------- the model


def test_save_load_round_trip_in_safetensors(tmp_path: Path) -> None:
    encoder, tokenizer = _encoder(layers=2)
    spec = HeadSpec("sent", "classification", "classification", 2, "mean", 0.1, ["neg", "pos"])
    model = MultiTaskModel.build(encoder, {"sent": spec})
    model.save(tmp_path / "m", tokenizer)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == LSTM_MODEL_TYPE

    plain = AutoModel.from_pretrained(str(tmp_path / "m"))  # plain transformers, once mtfuse is imported
    assert isinstance(plain, LstmEncoder) and plain.config.hidden_size == 16
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert saved.keys() == encoder.state_dict().keys()
    for name, t in encoder.state_dict().items():
        assert torch.equal(plain.state_dict()[name], t) and torch.equal(saved[name], t), name

    loaded, tok = MultiTaskModel.load(tmp_path / "m")
    batch = dict(tok(["a good film", "London"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        assert torch.equal(loaded("sent", batch), model.eval()("sent", batch))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_real_tokens(side: str, bidirectional: bool) -> None:
    encoder, tokenizer = _encoder(layers=2, bidirectional=bidirectional)
    tokenizer.padding_side = side
    short, long = "a good film", "a long and quiet story about a city by the sea, told twice over"
    alone = tokenizer([short], return_tensors="pt")
    both = tokenizer([short, long], padding=True, return_tensors="pt")
    n, t = alone["input_ids"].shape[1], both["input_ids"].shape[1]
    assert t > n + 5
    real = slice(0, n) if side == "right" else slice(t - n, t)
    with torch.no_grad():
        a = encoder(**alone, output_hidden_states=True)
        b = encoder(**both, output_hidden_states=True)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(y[0, real], x[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(b.pooler_output[0], a.pooler_output[0], atol=1e-6, rtol=0)
    pad = slice(n, t) if side == "right" else slice(0, t - n)
    assert b.last_hidden_state[0, pad].abs().max() == 0  # padded positions are zeros


def test_hidden_states_and_outputs() -> None:
    encoder, tokenizer = _encoder(layers=3)
    batch = tokenizer(["a good film", "London"], padding=True, return_tensors="pt")
    b, t = batch["input_ids"].shape
    assert encoder.config.hidden_size == 16 and encoder.config.num_hidden_layers == 3
    with torch.no_grad():
        out = encoder(**batch, output_hidden_states=True)
        plain = encoder(**batch)
        as_tuple = encoder(**batch, return_dict=False)
    assert [tuple(h.shape) for h in out.hidden_states] == [(b, t, 12)] + [(b, t, 16)] * 3
    assert out.last_hidden_state is out.hidden_states[-1] and out.pooler_output.shape == (b, 16)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(out.pooler_output, (out.last_hidden_state * mask).sum(1) / mask.sum(1))
    assert plain.hidden_states is None and len(as_tuple) == 2
    one_way, _ = _encoder(bidirectional=False)
    assert one_way.config.hidden_size == 8 and one_way(**batch).last_hidden_state.shape == (b, t, 8)


def test_token_type_ids_reach_the_encoder() -> None:
    """The segment embedding carries a pair's second sentence and the srl predicate mark into the LSTM."""
    encoder, tokenizer = _encoder()
    batch = dict(tokenizer(["a good film"], ["London"], return_tensors="pt"))
    with torch.no_grad():
        with_types = encoder(**batch).last_hidden_state
        without = encoder(**{k: v for k, v in batch.items() if k != "token_type_ids"}).last_hidden_state
    assert batch["token_type_ids"].sum() > 0 and not torch.allclose(with_types, without)


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = _encoder(init_seed=7)
    assert torch.equal(torch.rand(3), expected)  # building drew from its own generator
    b, _ = _encoder(init_seed=7)
    c, _ = _encoder(init_seed=8)
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
    assert not torch.equal(a.layers[0].fwd.weight_ih_l0, c.layers[0].fwd.weight_ih_l0)
    h = 8
    bias = a.layers[0].fwd.bias_ih_l0.detach()
    assert torch.equal(bias[h : 2 * h], torch.ones(h)) and a.word_embeddings.weight[0].abs().sum() == 0


@pytest.mark.parametrize(
    "sharing",
    [None, {"method": "soft", "layers": [0]}, {"method": "mmoe", "experts": 2}],
    ids=["hard", "soft", "mmoe"],
)
def test_sharing_methods_and_layers(sharing: dict[str, Any] | None) -> None:
    encoder, tokenizer = _encoder(layers=2)
    # the pooler output is the last layer's masked mean: mmoe's transformed states need pooling mean
    pooling = "mean" if sharing and sharing["method"] == "mmoe" else "pooler"
    specs = {
        "sent": HeadSpec("sent", "classification", "classification", 2, pooling, 0.1, ["n", "p"]),
        "low": HeadSpec("low", "token_classification", "token_classification", 3, "mean", 0.1, layer=1),
    }
    model = MultiTaskModel.build(encoder, specs, sharing).eval()
    batch = dict(tokenizer(["a good film", "London"], padding=True, return_tensors="pt"))
    out = model.forward_all(batch, ["sent", "low"])
    assert out["sent"].shape == (2, 2) and out["low"].shape == (2, batch["input_ids"].shape[1], 3)
    out["sent"].sum().backward()  # the gradient reaches the shared embeddings
    assert model.encoder.word_embeddings.weight.grad.abs().sum() > 0


def test_layer_zero_and_adapters_refused() -> None:
    encoder, _ = _encoder(layers=2)
    spec = HeadSpec("t", "token_classification", "token_classification", 3, "mean", 0.1, layer=0)
    with pytest.raises(MtfuseError, match="embeddings, 12 wide where heads read 16; choose a layer 1..2"):
        MultiTaskModel.build(encoder, {"t": spec})
    ok_spec = HeadSpec("t", "token_classification", "token_classification", 3, "mean", 0.1)
    with pytest.raises(ConfigError, match="adapters.*lstm encoder"):
        MultiTaskModel.build(encoder, {"t": ok_spec}, {"method": "adapters"})


# -------------------------------------------------------------------------------------- the CLI


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _config(tmp_path: Path, tasks: list[dict[str, Any]], lstm: dict[str, Any], **train: Any) -> Path:
    cfg = {
        "tasks": tasks,
        "model": {"name_or_path": "lstm", "lstm": lstm},
        "cache_dir": str(tmp_path / "cache"),
        "train": {"batch_size": 8, "tensorboard": False, "progress": False, **train},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


#: the task types the lstm encoder trains with (generation warm-starts a BERT decoder: refused below)
HEAD_TYPES = [
    "classification",
    "pair_classification",
    "regression",
    "multilabel",
    "token_classification",
    "multiple_choice",
    "intent_slots",
    "srl",
    "span_qa",
]


def _contract_task(tmp_path: Path, ttype: str, rng: random.Random) -> dict[str, Any]:
    build, text_fields, label_field = DATA[ttype]
    files = {
        split: _write_rows(tmp_path / ttype / f"{split}.jsonl", [build(rng) for _ in range(n)])
        for split, n in (("train", 24), ("dev", 12))
    }
    name = ttype.replace("_", "-")
    return {
        "name": name,
        "type": ttype,
        "data": {"format": "jsonl", "files": files},
        "text_fields": text_fields,
        "label_field": label_field,
    }


def test_every_head_type_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    rng = random.Random(0)
    tasks = [_contract_task(tmp_path, t, rng) for t in HEAD_TYPES]
    cfg = _config(tmp_path, tasks, {**TINY, "layers": 2}, max_steps=2 * len(tasks), lr=1e-3)
    ok("train", cfg, "--output", tmp_path / "run", "sampling.method=round_robin")
    run = tmp_path / "run"
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert set(metrics["tasks"]) == {t["name"] for t in tasks}
    steps = [json.loads(x) for x in (run / rundir.LOG).read_text().splitlines()]
    trained = {k.split("/")[1] for r in steps for k in r if k.startswith("loss/")}
    assert trained == {t["name"] for t in tasks}  # every head took a step
    assert (run / rundir.INIT / "model.safetensors").is_file()
    resolved = yaml.safe_load((run / rundir.CONFIG).read_text())["model"]
    assert resolved["pooling"] == "mean" and resolved["lstm"]["init_seed"] == 42  # train.seed's default

    ok("evaluate", run, "--split", "dev")
    assert set(json.loads((run / "metrics-dev.json").read_text())["tasks"]) == set(metrics["tasks"])
    build, fields, _ = DATA["srl"]
    inp = _write_rows(tmp_path / "in.jsonl", [{f: r[f] for f in fields} for r in (build(rng), build(rng))])
    ok("predict", run, "--task", "srl", "--input", inp, "--output", tmp_path / "pred.jsonl")
    assert len((tmp_path / "pred.jsonl").read_text().splitlines()) == 2


WORDS = ["film", "plot", "actor", "scene", "music", "London", "Paris", "dull", "long", "story"]


def _easy_rows(rng: random.Random, n: int) -> tuple[list[dict], list[dict]]:
    """sent: 'pos' iff the sentence has 'good'; loc: B-LOC on London / Paris."""

    def sentence() -> list[str]:
        s = [rng.choice(WORDS) for _ in range(6)]
        if rng.random() < 0.5:
            s[rng.randrange(6)] = "good"
        return s

    sent = [
        {"text": " ".join(s), "label": "pos" if "good" in s else "neg"}
        for s in (sentence() for _ in range(n))
    ]
    loc = [
        {"tokens": s, "tags": ["B-LOC" if w in ("London", "Paris") else "O" for w in s]}
        for s in (sentence() for _ in range(n))
    ]
    return sent, loc


def test_multitask_run_learns_an_easy_problem(tmp_path: Path) -> None:
    """Classification + token classification from scratch: both losses fall, dev beats the majority class."""
    rng = random.Random(1)
    files: dict[str, dict[str, str]] = {"sent": {}, "loc": {}}
    for split, n in (("train", 128), ("dev", 48)):
        sent, loc = _easy_rows(rng, n)
        files["sent"][split] = _write_rows(tmp_path / "sent" / f"{split}.jsonl", sent)
        files["loc"][split] = _write_rows(tmp_path / "loc" / f"{split}.jsonl", loc)
    tasks = [
        {"name": "sent", "type": "classification", "text_fields": ["text"], "label_field": "label",
         "metrics": ["accuracy"], "data": {"format": "jsonl", "files": files["sent"]}},
        {"name": "loc", "type": "token_classification", "text_fields": ["tokens"], "label_field": "tags",
         "metrics": ["seqeval_f1"], "data": {"format": "jsonl", "files": files["loc"]}},
    ]  # fmt: skip
    lstm = {"embedding_dim": 32, "hidden_size": 32}
    cfg = _config(tmp_path, tasks, lstm, batch_size=16, max_steps=120, lr=1e-2, scheduler="constant")
    ok("train", cfg, "--output", tmp_path / "run", "train.warmup_ratio=0")
    log = [json.loads(x) for x in (tmp_path / "run" / rundir.LOG).read_text().splitlines()]
    for task in ("sent", "loc"):
        losses = [r[f"loss/{task}"] for r in log if f"loss/{task}" in r]
        assert losses[-1] < 0.5 * losses[0], (task, losses)
    dev = [
        json.loads(x)["gold"]
        for x in (tmp_path / "run" / "predictions" / "sent.jsonl").read_text().splitlines()
    ]
    majority = max(dev.count("pos"), dev.count("neg")) / len(dev)
    scores = json.loads((tmp_path / "run" / rundir.METRICS).read_text())["tasks"]
    assert scores["sent"]["accuracy"] > 100 * majority + 10
    assert scores["loc"]["seqeval_f1"] > 50  # the majority tag (O) scores 0


# ------------------------------------------------------------------ runs: reproducible, merged, exported


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Single-task runs: a and a2 (same config and seed), b (another task, a's init seed), c (another init)."""
    root = tmp_path_factory.mktemp("lstm_runs")
    rng = random.Random(2)
    sent, loc = _easy_rows(rng, 32)
    tasks = [
        {"name": "sent", "type": "classification", "text_fields": ["text"], "label_field": "label",
         "data": {"format": "jsonl", "files": {"train": _write_rows(root / "s.jsonl", sent)}}},
        {"name": "loc", "type": "token_classification", "text_fields": ["tokens"], "label_field": "tags",
         "data": {"format": "jsonl", "files": {"train": _write_rows(root / "l.jsonl", loc)}}},
    ]  # fmt: skip
    for t in tasks:
        t["data"]["files"]["dev"] = t["data"]["files"]["train"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the autouse fixture is not active yet
    cfg = _config(root, tasks, TINY, max_steps=3, lr=1e-2)
    out = {}
    for name, args in {
        "a": ["only_tasks=[sent]", "train.seed=1"],
        "a2": ["only_tasks=[sent]", "train.seed=1"],
        "b": ["only_tasks=[loc]", "train.seed=2", "model.lstm.init_seed=1"],
        "c": ["only_tasks=[loc]", "train.seed=3"],
    }.items():
        ok("train", cfg, "--output", root / name, *args)
        out[name] = root / name
    torch.set_num_threads(before)
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_same_seed_same_trained_weights(runs: dict[str, Path]) -> None:
    for f in ("model/model.safetensors", "model/heads.safetensors", "init/model.safetensors"):
        a, a2 = _tensors(runs["a"] / f), _tensors(runs["a2"] / f)
        assert a.keys() == a2.keys() and all(torch.equal(a[k], a2[k]) for k in a), f
    init, trained = (
        _tensors(runs["a"] / "init/model.safetensors"),
        _tensors(runs["a"] / "model/model.safetensors"),
    )
    assert not all(torch.equal(init[k], trained[k]) for k in init)  # init/ is the start, not the end
    b_init = _tensors(runs["b"] / "init/model.safetensors")  # init_seed 1 = a's train.seed
    assert all(torch.equal(init[k], b_init[k]) for k in init)


def test_merge_needs_a_shared_init(runs: dict[str, Path], tmp_path: Path) -> None:
    ok("merge", runs["a"], runs["b"], "--method", "task_arithmetic", "--output", tmp_path / "ab")
    merged = tmp_path / "ab"
    record = json.loads((merged / rundir.MERGE).read_text())
    assert record["base"] == "lstm" and set(record["distance_to_base"]) == {str(runs["a"]), str(runs["b"])}
    assert set(json.loads((merged / rundir.METRICS).read_text())["tasks"]) == {"sent", "loc"}
    assert (merged / rundir.INIT / "model.safetensors").is_file()  # the merged run can be merged again
    # task arithmetic from the init: init + (a - init) + (b - init)
    init = _tensors(runs["a"] / "init/model.safetensors")
    a, b = _tensors(runs["a"] / "model/model.safetensors"), _tensors(runs["b"] / "model/model.safetensors")
    got = _tensors(merged / "model/model.safetensors")
    for k in init:
        torch.testing.assert_close(got[k], a[k] + b[k] - init[k])
    assert yaml.safe_load((merged / rundir.CONFIG).read_text())["model"]["name_or_path"] == "lstm"
    ok("evaluate", merged, "--split", "dev")

    fails(
        ["merge", runs["a"], runs["c"], "--method", "linear", "--output", tmp_path / "ac"],
        "started from other random weights",
        "model.lstm.init_seed 3 vs 1",
    )
    assert not (tmp_path / "ac").exists()


def test_init_from_keeps_the_lineage_init(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run started from another (model.init_from, as mtfuse finetune does) shares that run's init, so the
    two still merge; a changed architecture is refused."""
    cfg = runs["a"] / rundir.CONFIG
    ok("train", cfg, "--output", tmp_path / "ft", f"model.init_from={runs['a']}", "train.seed=9")
    a_init = _tensors(runs["a"] / "init/model.safetensors")
    ft_init = _tensors(tmp_path / "ft" / "init/model.safetensors")
    assert all(torch.equal(a_init[k], ft_init[k]) for k in a_init)
    fails(
        [
            "train",
            cfg,
            "--output",
            tmp_path / "bad",
            f"model.init_from={runs['a']}",
            "model.lstm.hidden_size=16",
            "model.lstm.bidirectional=false",
        ],
        "model.init_from",
        "lstm_hidden_size",
    )


def test_onnx_export_matches_torch(runs: dict[str, Path]) -> None:
    ok("export", runs["b"], "--format", "onnx")
    meta = json.loads((runs["b"] / rundir.ONNX / rundir.EXPORT).read_text())
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert max(meta["parity_max_abs_diff"].values()) < 1e-5  # padded probe batches of another shape


def test_config_errors(tmp_path: Path) -> None:
    rng = random.Random(3)
    cls = _contract_task(tmp_path, "classification", rng)
    gen = _contract_task(tmp_path, "generation", rng)
    cfg = _config(tmp_path, [cls], TINY, max_steps=1)
    out = tmp_path / "out"
    fails(["train", cfg, "--output", out, "model.lstm.hiden_size=4"], "model.lstm.hiden_size")
    fails(["train", cfg, "--output", out, "model.lstm.dropout=1.5"], "model.lstm.dropout")
    fails(["train", cfg, "--output", out, "model.lstm.tokenizer=lstm"], "model.lstm.tokenizer")
    fails(["train", cfg, "--output", out, "model.name_or_path=default"], "model.lstm configures", "lstm")
    fails(["train", cfg, "--output", out, "model.sharing.method=adapters"], "adapters", "lstm encoder")
    gen_cfg = _config(tmp_path, [gen], TINY, max_steps=1)
    fails(["train", gen_cfg, "--output", out], "generation warm-starts a BERT decoder", "model.name_or_path")
    assert not out.exists()
