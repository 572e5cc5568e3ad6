"""mtfuse.model.sharing: hard, soft, adapters, mmoe/cgc, and per-head encoder layers (tiny random BERT)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_model, save_model
from torch.nn import functional as F
from transformers import AutoModel

from mtfuse.config import ModelConfig
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.model import HEADS_JSON, HeadSpec, MultiTaskModel, load_encoder
from mtfuse.model.sharing import SHARING, SHARING_JSON, SHARING_WEIGHTS

SPECS = {
    "sent": HeadSpec("sent", "classification", "classification", 3, "pooler", 0.0, ["a", "b", "c"]),
    "ner": HeadSpec("ner", "token_classification", "token_classification", 4, "cls", 0.0),
    "score": HeadSpec("score", "regression", "regression", 1, "mean", 0.0, layer=1),
}

SHARINGS: dict[str, dict[str, Any] | None] = {
    "hard": None,
    "soft": {"method": "soft", "layers": [0, -1], "penalty": 0.01},
    "lora": {"method": "adapters", "r": 4},
    "lora-trained-base": {"method": "adapters", "r": 4, "train_base": True, "delta_penalty": 0.1},
    "ia3": {"method": "adapters", "kind": "ia3"},
    "mmoe": {"method": "mmoe", "experts": 3, "expert_size": 16, "dropout": 0.0},
    "cgc": {"method": "mmoe", "experts": 2, "task_experts": 1, "dropout": 0.0, "residual": False},
}
ADAPTERS = ("lora", "lora-trained-base", "ia3")
# peft is needed by the adapters method only (imported when one is built)
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")


def build(model_dir: Path, sharing: Any, specs: dict[str, HeadSpec] = SPECS, seed: int = 1) -> MultiTaskModel:
    encoder, _ = load_encoder(str(model_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiTaskModel.build(encoder, specs, sharing).eval()


@pytest.fixture(scope="module")
def batch(tiny_model_dir: Path) -> dict[str, torch.Tensor]:
    _, tokenizer = load_encoder(str(tiny_model_dir))
    enc = tokenizer(["hello world", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    return dict(enc)


@pytest.fixture(params=[pytest.param(k, marks=needs_peft) if k in ADAPTERS else k for k in SHARINGS])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def perturb_task_params(model: MultiTaskModel, seed: int = 0) -> None:
    """Move every per-task parameter of the sharing method (adapters start as the identity: LoRA B = 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for task in model.tasks:
            for name, p in model.task_named_parameters(task):
                if not name.startswith("heads."):
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))


def toy_loss(model: MultiTaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model.forward_all(batch, model.tasks)
    b, t = batch["input_ids"].shape
    loss = F.cross_entropy(out["sent"], torch.tensor([0, 2]))
    loss = loss + F.cross_entropy(out["ner"].reshape(b * t, -1), torch.arange(b * t) % 4)
    return loss + F.mse_loss(out["score"], torch.tensor([1.0, -1.0]))


# ------------------------------------------------------------------------------------------ config


def test_registry_names() -> None:
    assert SHARING.names() == ["adapters", "hard", "mmoe", "soft"]


def test_config_section_default_and_methods(tiny_model_dir: Path) -> None:
    assert ModelConfig().sharing.method == "hard"
    section = ModelConfig.model_validate(
        {"sharing": {"method": "soft", "layers": [1], "penalty": 0.5}}
    ).sharing
    model = build(tiny_model_dir, section)
    assert model.sharing.method == "soft" and model.sharing.params.penalty == 0.5
    assert model.sharing.layer_ids == [1]


@pytest.mark.parametrize(
    ("sharing", "message"),
    [
        ({"method": "nope"}, r"unknown sharing method 'nope'; choose from \[adapters, hard, mmoe, soft\]"),
        (
            {"method": "soft", "layerz": [1]},
            r"unknown config key 'model.sharing.layerz'; choose from \[layers",
        ),
        (
            {"method": "hard", "r": 4},
            r"unknown config key 'model.sharing.r': model.sharing method 'hard' takes no parameters",
        ),
        ({"method": "soft", "layers": [5]}, r"layer 5 is out of range; this encoder has 2"),
        ({"method": "soft", "penalty": -1}, r"model.sharing.penalty"),
        ({"method": "mmoe", "experts": 0}, r"experts \+ task_experts must be at least 1"),
        ({"method": "adapters", "kind": "ia3", "delta_penalty": 1.0}, r"delta_penalty needs kind 'lora'"),
        pytest.param(
            {"method": "adapters", "target_modules": ["nothing_here"]},
            r"peft could not add adapters",
            marks=needs_peft,
        ),
    ],
)
def test_bad_sharing_config_is_a_clear_error(tiny_model_dir: Path, sharing: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(tiny_model_dir, sharing)


def test_head_layer_out_of_range(tiny_model_dir: Path) -> None:
    specs = {"x": HeadSpec("x", "classification", "classification", 2, "cls", 0.0, layer=3)}
    with pytest.raises(MtfuseError, match=r"task 'x': layer 3 is out of range.*0..2"):
        build(tiny_model_dir, None, specs)


# ------------------------------------------------------------------------------------------ every method


def test_forward_shapes_and_forward_all(tiny_model_dir: Path, batch, kind: str) -> None:
    model = build(tiny_model_dir, SHARINGS[kind])
    perturb_task_params(model)
    b, t = batch["input_ids"].shape
    with torch.no_grad():
        together = model.forward_all(batch, ["ner", "sent", "score"])
        assert list(together) == ["ner", "sent", "score"]
        assert together["sent"].shape == (b, 3)
        assert together["ner"].shape == (b, t, 4)
        assert together["score"].shape == (b,)
        for task, logits in together.items():
            torch.testing.assert_close(model(task, batch), logits)


def test_tasks_see_different_encoders(tiny_model_dir: Path, batch, kind: str) -> None:
    """What two heads read differs by task under every method but hard sharing (after moving per-task
    parameters, which adapters start without)."""
    specs = {n: HeadSpec(n, "classification", "classification", 2, "cls", 0.0) for n in ("a", "b")}
    model = build(tiny_model_dir, SHARINGS[kind], specs)
    perturb_task_params(model)
    with torch.no_grad():
        ha, hb = model.encode(batch, "a")[0], model.encode(batch, "b")[0]
    assert torch.equal(ha, hb) == (kind == "hard")


def test_training_steps_lower_the_loss(tiny_model_dir: Path, batch, kind: str) -> None:
    model = build(tiny_model_dir, SHARINGS[kind])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = toy_loss(model, batch)
        extra = model.extra_loss()
        total = loss if extra is None else loss + extra
        losses.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_save_load_round_trip(tiny_model_dir: Path, batch, kind: str, tmp_path: Path) -> None:
    model = build(tiny_model_dir, SHARINGS[kind])
    perturb_task_params(model)
    model.save(tmp_path / "m")
    loaded, _ = MultiTaskModel.load(tmp_path / "m")
    assert not loaded.training and loaded.sharing.method == model.sharing.method
    assert loaded.specs == model.specs
    with torch.no_grad():
        before, after = model.forward_all(batch, model.tasks), loaded.forward_all(batch, loaded.tasks)
    for task in model.tasks:
        assert torch.equal(before[task], after[task]), task
    assert (tmp_path / "m" / SHARING_JSON).is_file() == (kind != "hard")


def test_saved_encoder_loads_with_plain_automodel(
    tiny_model_dir: Path, batch, kind: str, tmp_path: Path
) -> None:
    """model.safetensors is the shared encoder (soft: the shared layers; adapters: the base, without them)."""
    model = build(tiny_model_dir, SHARINGS[kind])
    perturb_task_params(model)
    model.save(tmp_path / "m")
    plain = AutoModel.from_pretrained(str(tmp_path / "m")).eval()
    assert set(plain.state_dict()) == set(AutoModel.from_pretrained(str(tiny_model_dir)).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).last_hidden_state, model.encode(batch)[0])


def test_checkpoint_tensors_round_trip(tiny_model_dir: Path, batch, kind: str, tmp_path: Path) -> None:
    """mtfuse.checkpoint saves the whole module with safetensors' save_model: a rebuilt model reloads it."""
    model = build(tiny_model_dir, SHARINGS[kind])
    perturb_task_params(model)
    save_model(model, str(tmp_path / "ckpt.safetensors"))
    fresh = build(tiny_model_dir, SHARINGS[kind], seed=2)
    load_model(fresh, str(tmp_path / "ckpt.safetensors"))
    with torch.no_grad():
        for task in model.tasks:
            assert torch.equal(model(task, batch), fresh(task, batch)), task


def test_shared_and_task_parameters_split(tiny_model_dir: Path, kind: str) -> None:
    model = build(tiny_model_dir, SHARINGS[kind])
    names = dict(model.named_parameters())
    shared = {n for n, _ in model.shared_named_parameters()}
    per_task = {t: {n for n, _ in model.task_named_parameters(t)} for t in model.tasks}
    assert shared <= set(names) and all(own <= set(names) for own in per_task.values())
    for t, own in per_task.items():
        assert not own & shared, t
        assert {n for n in own if n.startswith("heads.")} == {
            f"heads.{t}.{n}" for n, _ in model.heads[t].named_parameters()
        }
        for other, theirs in per_task.items():
            assert other == t or not own & theirs
    trainable = {n for n, p in names.items() if p.requires_grad}
    covered = shared | set().union(*per_task.values())
    assert covered <= trainable
    left = trainable - covered
    if kind == "soft":  # the shared centre of the copied layers: only the penalty reaches it
        assert left and all(
            n.startswith(("encoder.encoder.layer.0.", "encoder.encoder.layer.1.")) for n in left
        )
    else:
        assert not left
    assert [id(p) for p in model.shared_parameters()] == [
        id(names[n]) for n, _ in model.shared_named_parameters()
    ]
    if kind in ("lora", "ia3"):  # frozen base: nothing shared is trained
        assert shared == set()
    if kind in ("mmoe", "cgc"):
        assert any(n.startswith("sharing.experts.") for n in shared)
        assert any(n.startswith("sharing.gates.sent.") for n in per_task["sent"])
    if kind == "cgc":
        assert any(n.startswith("sharing.task_experts.sent.") for n in per_task["sent"])


def test_add_extra_loss_grad_matches_backward(tiny_model_dir: Path, kind: str) -> None:
    model = build(tiny_model_dir, SHARINGS[kind])
    perturb_task_params(model)
    extra = model.extra_loss()
    if kind not in ("soft", "lora-trained-base"):
        assert extra is None and model.add_extra_loss_grad() is None
        return
    assert extra is not None
    extra.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    value = model.add_extra_loss_grad(scale=2.0)
    assert value == pytest.approx(extra.item())
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(expected)
    for n, g in got.items():
        torch.testing.assert_close(g, 2.0 * expected[n])


# ------------------------------------------------------------------------------------------ hard


def test_hard_sharing_save_is_unchanged(tiny_model_dir: Path, tmp_path: Path) -> None:
    """No sharing files, and heads.json as before sharing methods existed (no 'layer' key when unset)."""
    specs = {n: s for n, s in SPECS.items() if s.layer is None}
    model = build(tiny_model_dir, None, specs)
    assert not list(model.sharing.parameters()) and not model.sharing.state_dict()
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "heads.json",
        "heads.safetensors",
        "model.safetensors",
    ]
    old_style = [
        {
            k: v
            for k, v in vars(s).items()
            if k not in ("layer", "target_mean", "target_std", "decoder", "lm_head")
        }
        for s in specs.values()
    ]  # the HeadSpec fields before 'layer' (and the regression target scale, decoder and lm_head, unset here)
    text = json.dumps({"format_version": 1, "heads": old_style}, indent=2) + "\n"
    assert (tmp_path / "m" / HEADS_JSON).read_text() == text


@pytest.mark.parametrize(
    ("kind", "passes"), [("hard", 1), ("mmoe", 1), pytest.param("lora", 3, marks=needs_peft), ("soft", 3)]
)
def test_encoder_passes_in_forward_all(tiny_model_dir: Path, batch, kind: str, passes: int) -> None:
    """One encoder pass for all tasks, except where the encoder differs per task (adapters, soft)."""
    model = build(tiny_model_dir, SHARINGS[kind])
    calls: list[int] = []
    handle = model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            model.forward_all(batch, model.tasks)
    finally:
        handle.remove()
    assert len(calls) == passes


@needs_peft
def test_saving_hard_over_a_soft_directory_removes_sharing_files(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    build(tiny_model_dir, SHARINGS["soft"]).save(tmp_path / "m")
    build(tiny_model_dir, SHARINGS["lora"]).save(tmp_path / "m")
    assert (tmp_path / "m" / "adapters").is_dir() and not (tmp_path / "m" / SHARING_WEIGHTS).exists()
    build(tiny_model_dir, None).save(tmp_path / "m")
    assert not (tmp_path / "m" / SHARING_JSON).exists() and not (tmp_path / "m" / "adapters").exists()
    loaded, _ = MultiTaskModel.load(tmp_path / "m")
    assert loaded.sharing.method == "hard"


# ------------------------------------------------------------------------------------------ hierarchical


def test_head_reads_its_encoder_layer(tiny_model_dir: Path, batch) -> None:
    specs = {
        "low": HeadSpec("low", "token_classification", "token_classification", 3, "cls", 0.0, layer=1),
        "emb": HeadSpec("emb", "classification", "classification", 2, "cls", 0.0, layer=0),
        "top": HeadSpec("top", "classification", "classification", 2, "pooler", 0.0, layer=-2),
    }
    model = build(tiny_model_dir, None, specs)
    with torch.no_grad():
        ref = model.encoder(**batch, output_hidden_states=True).hidden_states
        assert torch.equal(model.encode(batch, "low")[0], ref[1])
        assert torch.equal(model.encode(batch, "emb")[0], ref[0])
        out = model.forward_all(batch, model.tasks)
        assert torch.equal(out["low"], model.heads["low"].classifier(ref[1]))
        assert torch.equal(out["emb"], model.heads["emb"].classifier(ref[0][:, 0]))
        # 'pooler' pooling applies the encoder's own pooler to the layer the head reads
        pooled = model.encoder.pooler(ref[-2])
        assert torch.equal(model.encode(batch, "top")[1], pooled)
        assert torch.equal(out["top"], model.heads["top"].classifier(pooled))


def test_head_layer_is_saved_in_heads_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    build(tiny_model_dir, None).save(tmp_path / "m")
    heads = json.loads((tmp_path / "m" / HEADS_JSON).read_text())["heads"]
    assert {h["task"]: h.get("layer", "unset") for h in heads} == {
        "sent": "unset",
        "ner": "unset",
        "score": 1,
    }
    loaded, _ = MultiTaskModel.load(tmp_path / "m")
    assert loaded.specs["score"].layer == 1


def test_bad_layer_in_heads_json_names_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    build(tiny_model_dir, None).save(tmp_path / "m")
    path = tmp_path / "m" / HEADS_JSON
    meta = json.loads(path.read_text())
    meta["heads"][2]["layer"] = "one"
    path.write_text(json.dumps(meta))
    with pytest.raises(MtfuseError, match=r"heads.json heads\[2\] \(field 'layer'\): expected an integer"):
        MultiTaskModel.load(tmp_path / "m")
    meta["heads"][2]["layer"] = 9
    path.write_text(json.dumps(meta))
    with pytest.raises(MtfuseError, match=r"heads.json: task 'score': layer 9 is out of range"):
        MultiTaskModel.load(tmp_path / "m")


# ------------------------------------------------------------------------------------------ soft


def test_soft_extra_loss_is_zero_then_the_l2_formula(tiny_model_dir: Path) -> None:
    model = build(tiny_model_dir, {"method": "soft", "layers": [1], "penalty": 0.3})
    assert model.extra_loss().item() == 0.0
    copy = model.sharing.copies["ner"]["1"]
    shared = model.encoder.encoder.layer[1]
    with torch.no_grad():
        copy.output.dense.weight.add_(0.5)  # 32 x 64 entries moved by 0.5
        copy.attention.self.query.bias.sub_(2.0)  # 32 entries moved by 2
        model.sharing.copies["sent"]["1"].output.LayerNorm.weight.add_(1.0)  # 32 entries moved by 1
    expected = 0.3 * (64 * 32 * 0.25 + 32 * 4.0 + 32 * 1.0)
    assert model.extra_loss().item() == pytest.approx(expected, rel=1e-5)
    # the centre moves the other way: its gradient is -2 * penalty * sum_t (theta_t - theta_s)
    model.extra_loss().backward()
    torch.testing.assert_close(shared.output.dense.weight.grad, torch.full((32, 64), -2 * 0.3 * 0.5))
    torch.testing.assert_close(copy.output.dense.weight.grad, torch.full((32, 64), 2 * 0.3 * 0.5))


def test_soft_task_pass_uses_its_copy_and_restores_the_encoder(tiny_model_dir: Path, batch) -> None:
    model = build(tiny_model_dir, {"method": "soft", "layers": [1]})
    layer = model.encoder.encoder.layer[1]
    with torch.no_grad():
        model.sharing.copies["sent"]["1"].output.dense.bias.add_(1.0)
        shared_out = model.encode(batch)[0]
        sent_out = model.encode(batch, "sent")[0]
        assert model.encoder.encoder.layer[1] is layer  # swapped back after the pass
        assert torch.equal(model.encode(batch, "ner")[0], shared_out)  # ner's copy is still the shared layer
        assert not torch.equal(sent_out, shared_out)
    assert not any(k.startswith("encoder.") and "copies" in k for k in model.state_dict())


# ------------------------------------------------------------------------------------------ adapters


@needs_peft
def test_frozen_base_is_unchanged_by_training(tiny_model_dir: Path, batch) -> None:
    model = build(tiny_model_dir, SHARINGS["lora"])
    base = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if "lora_" in n}
    assert (
        base and lora and not any(p.requires_grad for n, p in model.encoder.named_parameters() if n in base)
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        toy_loss(model, batch).backward()
        opt.step()
    now = dict(model.encoder.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in base.items())
    assert all(now[n].requires_grad for n in lora)  # switching adapters kept every adapter trainable
    assert any(not torch.equal(now[n], v) for n, v in lora.items() if ".lora_B.sent." in n)
    assert any(not torch.equal(now[n], v) for n, v in lora.items() if ".lora_B.ner." in n)


@needs_peft
def test_trained_base_changes(tiny_model_dir: Path, batch) -> None:
    model = build(tiny_model_dir, SHARINGS["lora-trained-base"])
    before = model.encoder.embeddings.word_embeddings.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    toy_loss(model, batch).backward()
    opt.step()
    assert not torch.equal(model.encoder.embeddings.word_embeddings.weight, before)


@needs_peft
def test_lora_delta_penalty_formula(tiny_model_dir: Path) -> None:
    model = build(tiny_model_dir, {"method": "adapters", "r": 2, "alpha": 6, "delta_penalty": 0.5})
    assert model.extra_loss().item() == 0.0  # LoRA B starts at zero
    perturb_task_params(model)
    expected = 0.0
    for module in model.encoder.modules():
        if hasattr(module, "lora_A"):
            for task in model.tasks:
                delta = 3.0 * module.lora_B[task].weight @ module.lora_A[task].weight  # scaling = 6 / 2
                expected += float(delta.detach().pow(2).sum())
    assert model.extra_loss().item() == pytest.approx(0.5 * expected, rel=1e-5)


@needs_peft
def test_adapters_saved_in_peft_format(tiny_model_dir: Path, batch, tmp_path: Path) -> None:
    from peft import PeftModel

    model = build(tiny_model_dir, SHARINGS["lora"])
    perturb_task_params(model)
    model.save(tmp_path / "m")
    folder = tmp_path / "m" / "adapters" / "ner"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (
        config["peft_type"] == "LORA" and config["r"] == 4 and config["target_modules"] == ["query", "value"]
    )
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tmp_path / "m")), str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).last_hidden_state, model.encode(batch, "ner")[0])


@needs_peft
def test_task_named_like_an_encoder_module_is_refused(tiny_model_dir: Path) -> None:
    specs = {n: HeadSpec(n, "classification", "classification", 2, "cls", 0.0) for n in ("attention", "b")}
    with pytest.raises(ConfigError, match="task name 'attention' is also the name of a module"):
        build(tiny_model_dir, SHARINGS["lora"], specs)


@needs_peft
def test_missing_adapter_file_names_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    build(tiny_model_dir, SHARINGS["lora"]).save(tmp_path / "m")
    (tmp_path / "m" / "adapters" / "sent" / "adapter_model.safetensors").unlink()
    with pytest.raises(MtfuseError, match=r"adapters/sent/adapter_model.safetensors: missing"):
        MultiTaskModel.load(tmp_path / "m")


# ------------------------------------------------------------------------------------------ mmoe / cgc


def test_mmoe_gates_and_formula(tiny_model_dir: Path, batch) -> None:
    model = build(tiny_model_dir, SHARINGS["cgc"])
    sharing = model.sharing
    hidden = torch.randn(2, 5, 32)
    with torch.no_grad():
        gates = sharing.gate_weights("ner", hidden)
        assert gates.shape == (2, 5, 3)  # 2 shared experts + 1 of ner's own
        torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5))
        experts = [*sharing.experts, *sharing.task_experts["ner"]]
        expected = sum(gates[..., i : i + 1] * e(hidden) for i, e in enumerate(experts))
        torch.testing.assert_close(sharing.transform("ner", hidden, None, {}), expected)  # residual: false


def test_mmoe_shared_experts_run_once_per_pass(tiny_model_dir: Path, batch) -> None:
    model = build(tiny_model_dir, SHARINGS["mmoe"])
    calls: list[int] = []
    handle = model.sharing.experts[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            model.forward_all(batch, model.tasks)  # sent and ner read the last layer, score reads layer 1
    finally:
        handle.remove()
    assert len(calls) == 2


def test_missing_sharing_weights_and_bad_sharing_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    build(tiny_model_dir, SHARINGS["mmoe"]).save(tmp_path / "m")
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "m", broken)
    (broken / SHARING_WEIGHTS).unlink()
    with pytest.raises(MtfuseError, match=r"sharing.safetensors: missing"):
        MultiTaskModel.load(broken)
    shutil.rmtree(broken)
    shutil.copytree(tmp_path / "m", broken)
    meta = json.loads((broken / SHARING_JSON).read_text())
    meta["params"]["bogus"] = 1
    (broken / SHARING_JSON).write_text(json.dumps(meta))
    with pytest.raises(MtfuseError, match=r"sharing.json: unknown config key 'model.sharing.bogus'"):
        MultiTaskModel.load(broken)
    (broken / SHARING_JSON).write_text(json.dumps({**meta, "format_version": 7}))
    with pytest.raises(MtfuseError, match=r"sharing.json \(field 'format_version'\): expected 1"):
        MultiTaskModel.load(broken)
