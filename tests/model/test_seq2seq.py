"""Encoder-decoder checkpoints (T5, BART) as the shared encoder (``mtfuse.model.seq2seq``): generation tasks
decode with the checkpoint's own decoder and LM head (``seq2seq_lm``), one per task or one shared
(``model.decoder``); tied embeddings are stored once; runs round-trip exactly, hold a plain-transformers copy,
and merge (a shared decoder like the encoder, per-task decoders kept as heads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from mtfuse.config import RunConfig
from mtfuse.errors import MtfuseError
from mtfuse.evaluate import predict_encoded
from mtfuse.gradients import last_shared_weight
from mtfuse.model import MultiTaskModel, load_encoder, seq2seq
from mtfuse.plan import make_plan
from mtfuse.tasks.features import collate
from mtfuse.tasks.prepare import prepare_tasks
from mtfuse.training.setup import head_specs
from tests.helpers.cli import fails, run_cli
from tests.helpers.fusion import merge

PAIRS = [
    ("good film", "guter Film"),
    ("bad plot", "schlechte Handlung"),
    ("great actor", "großer Schauspieler"),
    ("dull scene", "langweilige Szene"),
]
SOURCES = [s for s, _ in PAIRS]
GERMAN = [t for _, t in PAIRS]
REVERSED = [" ".join(reversed(s.split())) for s in SOURCES]  # "film good": a second task on the same text
CPU = torch.device("cpu")


def _rows(targets: list[str]) -> list[dict[str, Any]]:
    return [
        {"src": s, "tgt": t, "label": "pos" if i % 2 == 0 else "neg"}
        for i, (s, t) in enumerate(zip(SOURCES, targets, strict=True))
    ]


def _data(folder: Path, targets: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(targets)))
    return folder


def _gen(name: str, folder: Path, prefix: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "type": "generation",
        "data": {"format": "jsonl", "path": str(folder)},
        "text_fields": ["src"],
        "label_field": "tgt",
        "generation": {"max_new_tokens": 12, "prefix": prefix},
    }


def _cls(folder: Path) -> dict[str, Any]:
    data = {"format": "jsonl", "path": str(folder)}
    return {
        "name": "cls",
        "type": "classification",
        "data": data,
        "text_fields": ["src"],
        "label_field": "label",
    }


def _cfg(
    tmp_path: Path, model_dir: Path, tasks: list[dict[str, Any]], decoder: str = "per_task"
) -> RunConfig:
    raw = {
        "tasks": tasks,
        "model": {"name_or_path": str(model_dir), "decoder": decoder},
        "cache_dir": str(tmp_path / "cache"),
    }
    return make_plan(RunConfig.model_validate(raw)).cfg  # defaults resolved, as train does


def _build(cfg: RunConfig, model_dir: Path):
    encoder, tok = load_encoder(str(model_dir))
    tasks = prepare_tasks(cfg, tok, ["train", "dev"])
    torch.manual_seed(0)
    model = MultiTaskModel.build(encoder, head_specs(tasks, cfg, 0.0, encoder.config, tok))
    return tasks, model, tok


def _fit(model: MultiTaskModel, tasks: dict[str, Any], tok: Any, steps: int) -> None:
    """Full-batch steps on every task at once (the sum of their losses)."""
    idx = list(range(len(PAIRS)))
    batches = {n: collate(t.splits["train"], idx, tok.pad_token_id, t.type) for n, t in tasks.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = sum(
            t.type.loss(model(n, batches[n]), batches[n]["labels"], **model.heads[n].loss_kwargs())
            for n, t in tasks.items()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _decode(model: MultiTaskModel, task: Any, tok: Any) -> list[str]:
    return predict_encoded(model, task, task.splits["dev"], 2, CPU, tok.pad_token_id)[0]


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def _plain_decode(folder: Path, sources: list[str]) -> list[str]:
    """Greedy decoding with plain transformers only: AutoModelForSeq2SeqLM + its generation_config.json."""
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    x = tok(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**x, max_new_tokens=12)
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


# ---------------------------------------------------------------------------------------- per task


@pytest.mark.parametrize("kind", ["t5", "bart", "mbart", "marian", "pegasus"])
def test_the_checkpoints_own_decoder_memorises_pairs_and_round_trips(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, one_thread: None
) -> None:
    if kind in ("t5", "bart"):
        model_dir = request.getfixturevalue(f"tiny_{kind}_dir")
    else:
        model_dir = request.getfixturevalue("tiny_other_seq2seq_dirs")[kind]
    cfg = _cfg(tmp_path, model_dir, [_gen("mt", _data(tmp_path / "mt", GERMAN))])
    tasks, model, tok = _build(cfg, model_dir)
    head = model.heads["mt"]
    checkpoint = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    # the decoder and LM head are the checkpoint's own (loaded, not warm-started from the encoder)
    theirs = checkpoint.state_dict()
    assert head.model.state_dict().keys() and all(
        torch.equal(v, theirs[k]) for k, v in head.model.state_dict().items()
    )
    assert not seq2seq.has_decoder(model.encoder)  # per task: the shared module is the encoder stack
    assert not any("decoder" in k.split(".") or "lm_head" in k for k in model.encoder.state_dict())
    emb = model.encoder.get_input_embeddings().weight  # tied: encoder, decoder and LM head share one tensor
    assert head.model.get_decoder().embed_tokens.weight is emb and head.model.lm_head.weight is emb
    start = checkpoint.config.decoder_start_token_id
    # T5, Marian and Pegasus start decoding from the padding id, BART and mBART from </s>
    expected = {"t5": 0, "bart": 2, "mbart": 2, "marian": 1, "pegasus": 1}[kind]
    assert head.generation_tokens()["decoder_start_token_id"] == start == expected

    steps = 300 if kind in ("marian", "pegasus") else 150  # fixed sinusoidal positions: slower to memorise
    _fit(model, tasks, tok, steps)
    texts = _decode(model, tasks["mt"], tok)
    assert texts == GERMAN
    beam_cfg = _cfg(tmp_path, model_dir, [{**_gen("mt", tmp_path / "mt"), "generation": {"num_beams": 3}}])
    beam_task = prepare_tasks(beam_cfg, tok, ["dev"])["mt"]
    beam = _decode(model, beam_task, tok)  # beam search through the checkpoint's generate
    assert len(beam) == len(GERMAN) and all(isinstance(x, str) and x for x in beam)

    model.save(tmp_path / "model", tok)
    stored = tmp_path / "model"
    vocab_shaped = [
        k for k in _keys(stored / "model.safetensors") if k.endswith(("shared.weight", "embed_tokens.weight"))
    ]
    assert len(vocab_shaped) == 1  # the word embeddings once, with the encoder
    assert not any(
        k.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight"))
        for k in _keys(stored / "heads.safetensors")
    )
    again, _ = MultiTaskModel.load(stored)
    assert again.heads["mt"].model.lm_head.weight is again.encoder.get_input_embeddings().weight
    assert _decode(again, tasks["mt"], tok) == texts
    # model/hf/mt: the task's model as plain transformers loads it, decoding as mtfuse does
    assert (
        AutoModelForSeq2SeqLM.from_pretrained(stored / "hf" / "mt").generation_config.decoder_start_token_id
        == start
    )
    assert _plain_decode(stored / "hf" / "mt", SOURCES) == texts


# ------------------------------------------------------------------------------------------ shared


def test_one_shared_decoder_serves_every_generation_task(
    tiny_t5_dir: Path, tmp_path: Path, one_thread: None
) -> None:
    tasks_cfg = [
        _gen("de", _data(tmp_path / "de", GERMAN), "translate: "),
        _gen("rev", _data(tmp_path / "rev", REVERSED), "reverse: "),
        _cls(tmp_path / "de"),
    ]
    cfg = _cfg(tmp_path, tiny_t5_dir, tasks_cfg, decoder="shared")
    assert cfg.model.pooling == "mean"  # resolved: an encoder-decoder's encoder has no pooler
    tasks, model, tok = _build(cfg, tiny_t5_dir)
    assert seq2seq.has_decoder(model.encoder)
    assert model.heads["de"].seq2seq_view() is model.encoder is model.heads["rev"].seq2seq_view()
    assert model.task_named_parameters("de") == [] == model.task_named_parameters("rev")
    # the decoder is a shared parameter: gradient-level weighting aggregates it; GradNorm's layer is the encoder's
    shared = model.shared_named_parameters()
    assert any(n.startswith("encoder.decoder.") for n, _ in shared)
    last = last_shared_weight(shared)
    assert next(n for n, p in shared if p is last).startswith("encoder.encoder.")

    _fit(model, tasks, tok, 200)
    assert _decode(model, tasks["de"], tok) == GERMAN
    assert _decode(model, tasks["rev"], tok) == REVERSED

    model.save(tmp_path / "model", tok)
    stored = tmp_path / "model"
    assert {k.split(".")[0] for k in _keys(stored / "heads.safetensors")} == {"cls"}  # decoders hold nothing
    assert not (stored / "hf").exists()  # model/ itself is the plain-transformers copy
    again, _ = MultiTaskModel.load(stored)
    assert _decode(again, tasks["de"], tok) == GERMAN and _decode(again, tasks["rev"], tok) == REVERSED
    assert _plain_decode(stored, [f"translate: {s}" for s in SOURCES]) == GERMAN
    assert _plain_decode(stored, [f"reverse: {s}" for s in SOURCES]) == REVERSED


def test_a_saved_run_must_hold_the_decoder_its_heads_share(tiny_t5_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tiny_t5_dir, [_gen("mt", _data(tmp_path / "mt", GERMAN))])
    _, model, tok = _build(cfg, tiny_t5_dir)
    model.save(tmp_path / "model", tok)
    meta = json.loads((tmp_path / "model" / "heads.json").read_text())
    meta["heads"][0]["decoder"]["shared"] = True  # a shared decoder the encoder file does not have
    (tmp_path / "model" / "heads.json").write_text(json.dumps(meta))
    with pytest.raises(MtfuseError, match=r"heads\.json: .*shared decoder.*has none"):
        MultiTaskModel.load(tmp_path / "model")


# ----------------------------------------------------------------------------------- CLI and merge

TRAIN = {"batch_size": 4, "lr": 3.0e-3, "max_steps": 3, "tensorboard": False, "progress": False}


def _config_file(tmp_path: Path, name: str, tasks: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks, "train": TRAIN}, allow_unicode=True), encoding="utf-8")
    return path


def _train(tmp_path: Path, model_dir: Path, name: str, tasks: list[dict[str, Any]], *over: str) -> Path:
    out = tmp_path / "runs" / name
    argv = ["train", _config_file(tmp_path, name, tasks), "--output", out, f"model.name_or_path={model_dir}"]
    code, stdout, stderr = run_cli([*argv, f"cache_dir={tmp_path / 'cache'}", *over])
    assert code == 0, stdout + stderr
    return out


@pytest.fixture(scope="module")
def t5_runs(tmp_path_factory: pytest.TempPathFactory, tiny_t5_dir: Path) -> dict[str, Path]:
    """Four 3-step `mtfuse train` runs on the tiny T5: German and reversal, each with its decoder per task and
    shared; the shared ones with a classification task too, joint steps and PCGrad (a gradient method over
    the shared parameters, decoder included)."""
    root = tmp_path_factory.mktemp("t5_runs")
    de, rev = _data(root / "de", GERMAN), _data(root / "rev", REVERSED)
    joint = ["model.decoder=shared", "train.step_mode=joint", "weighting.method=pcgrad"]
    return {
        "de": _train(root, tiny_t5_dir, "de", [_gen("de", de)]),
        "rev": _train(root, tiny_t5_dir, "rev", [_gen("rev", rev)]),
        "de_shared": _train(
            root, tiny_t5_dir, "de_shared", [_gen("de", de, "translate: "), _cls(de)], *joint
        ),
        "rev_shared": _train(root, tiny_t5_dir, "rev_shared", [_gen("rev", rev, "reverse: ")], *joint[:1]),
    }


def test_train_writes_a_run_that_predicts(t5_runs: dict[str, Path], tmp_path: Path) -> None:
    run = t5_runs["de_shared"]
    assert "pooling: mean" in (run / "config.yaml").read_text()
    assert (run / "model" / "generation_config.json").is_file() and not (run / "model" / "hf").exists()
    assert (t5_runs["de"] / "model" / "hf" / "de" / "config.json").is_file()
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "good film"}) + "\n")
    code, out, err = run_cli(
        ["predict", run, "--task", "de", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out.jsonl"]
    )
    assert code == 0, out + err
    assert isinstance(json.loads((tmp_path / "out.jsonl").read_text())["text"], str)


def test_merge_merges_a_shared_decoder_like_the_encoder(
    t5_runs: dict[str, Path], tiny_t5_dir: Path, tmp_path: Path
) -> None:
    runs = [t5_runs["de_shared"], t5_runs["rev_shared"]]
    merge(runs, "task_arithmetic", tmp_path / "merged", params={"scale": 0.5})
    name = "decoder.block.1.layer.1.EncDecAttention.q.weight"  # checkpoint names: the base is the checkpoint
    with safe_open(str(tiny_t5_dir / "model.safetensors"), "pt") as f:
        base = f.get_tensor(name)
    tuned = []
    for run in runs:
        with safe_open(str(run / "model" / "model.safetensors"), "pt") as f:
            tuned.append(f.get_tensor(name))
    assert not torch.equal(tuned[0], base) and not torch.equal(tuned[0], tuned[1])  # trained, differently
    with safe_open(str(tmp_path / "merged" / "model" / "model.safetensors"), "pt") as f:
        merged = f.get_tensor(name)
    torch.testing.assert_close(merged, base + 0.5 * ((tuned[0] - base) + (tuned[1] - base)))
    model, _ = MultiTaskModel.load(tmp_path / "merged" / "model")
    assert set(model.tasks) == {"de", "cls", "rev"} and model.heads["rev"].seq2seq_view() is model.encoder


def test_merge_keeps_each_runs_own_decoder_as_its_head(t5_runs: dict[str, Path], tmp_path: Path) -> None:
    runs = [t5_runs["de"], t5_runs["rev"]]
    merge(runs, "linear", tmp_path / "merged")
    merged = tmp_path / "merged" / "model"
    assert not any(k.startswith("decoder.") for k in _keys(merged / "model.safetensors"))
    with safe_open(str(merged / "heads.safetensors"), "pt") as m:
        for run in runs:
            with safe_open(str(run / "model" / "heads.safetensors"), "pt") as f:
                for key in f.keys():  # noqa: SIM118
                    assert torch.equal(m.get_tensor(key), f.get_tensor(key)), key
    model, _ = MultiTaskModel.load(merged)
    assert not seq2seq.has_decoder(model.encoder) and model.heads["de"].model is not model.heads["rev"].model
    # model/hf/<task>/ as training writes it: the merged encoder with the task's own decoder, plain transformers
    for task, run in (("de", runs[0]), ("rev", runs[1])):
        plain = AutoModelForSeq2SeqLM.from_pretrained(merged / "hf" / task).state_dict()
        with safe_open(str(merged / "model.safetensors"), "pt") as f:
            for key in f.keys():  # noqa: SIM118
                assert torch.equal(plain[key], f.get_tensor(key)), key
        with safe_open(str(run / "model" / "hf" / task / "model.safetensors"), "pt") as f:
            decoder = [k for k in f.keys() if k.startswith("decoder.")]  # noqa: SIM118
            assert decoder
            for key in decoder:
                assert torch.equal(plain[key], f.get_tensor(key)), key
        assert all(isinstance(t, str) for t in _plain_decode(merged / "hf" / task, SOURCES))


def test_merge_refuses_a_shared_run_with_a_per_task_one(t5_runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MtfuseError, match="tensor names differ"):
        merge([t5_runs["de"], t5_runs["rev_shared"]], "linear", tmp_path / "merged")


# -------------------------------------------------------------------------------------------- export


def test_onnx_export_holds_the_encoder_heads_and_leaves_generation_out(
    t5_runs: dict[str, Path], tmp_path: Path
) -> None:
    """A T5 run with a shared decoder and a classification task: the graph has the classification head on the
    encoder stack (parity with torch), the generation task is left out and says where optimum finds it."""
    import onnxruntime as ort

    from mtfuse.predict import Predictor

    run = t5_runs["de_shared"]
    out = run / "onnx"
    code, text, err = run_cli(["export", run, "--format", "onnx", "--overwrite"])
    assert code == 0, text + err
    meta = json.loads((out / "export.json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["cls"] and meta["parity_max_abs_diff"]["cls"] < 1e-4
    assert set(meta["left_out"]) == {"de"} and str(run / "model") in meta["left_out"]["de"]
    assert "de: left out of the graph" in " ".join((text + err).split())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["cls"]
    onnx, torch_backend = Predictor(run, backend="onnx"), Predictor(run)
    rows = [{"src": "good film"}, {"src": "a long and dull scene"}]
    got, want = onnx.predict_rows("cls", rows), torch_backend.predict_rows("cls", rows)
    assert [r["label"] for r in got] == [r["label"] for r in want]
    with pytest.raises(MtfuseError, match=r"task 'de' is not in the ONNX export \(a generation task"):
        onnx.predict_rows("de", rows)

    # every task a generation task: one clear error naming where each task's plain copy is
    msg = fails(["export", t5_runs["de"], "--format", "onnx", "--output", tmp_path / "none"], "every task")
    assert str(t5_runs["de"] / "model" / "hf" / "de") in " ".join(msg.split())


# -------------------------------------------------------------------------------------------- errors


def test_bad_choices_are_one_clear_error(
    tiny_t5_dir: Path, tiny_model_dir: Path, tmp_path: Path, t5_runs: dict[str, Path]
) -> None:
    mt = _gen("mt", _data(tmp_path / "mt", GERMAN))
    cfg = _config_file(tmp_path, "mt", [mt])
    common = ["--output", tmp_path / "out", f"cache_dir={tmp_path / 'cache'}"]
    fails(["train", cfg, *common, f"model.name_or_path={tiny_t5_dir}", "model.decoder=both"], "model.decoder")
    fails(
        ["train", cfg, *common, f"model.name_or_path={tiny_model_dir}", "model.decoder=shared"],
        "model.decoder: 'shared' needs an encoder-decoder checkpoint",
    )
    fails(
        ["train", cfg, *common, f"model.name_or_path={tiny_t5_dir}", "model.sharing.method=soft"],
        "model.sharing.method: 'soft' is not supported with an encoder-decoder checkpoint",
    )
    fails(  # a new generation task cannot take its decoder from a run whose decoders are its heads
        ["train", cfg, *common, f"model.name_or_path={tiny_t5_dir}", f"model.init_from={t5_runs['de']}"],
        "model.init_from: task 'mt'",
        "model.decoder: per_task",
    )
