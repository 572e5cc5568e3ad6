"""The task-type contract: every registered task type goes through train -> evaluate -> predict -> ensemble ->
stack -> merge -> compare with a tiny encoder. A new task type must add its synthetic data here (the first
test fails until it does), and then runs through every command like the others. A type whose outputs are
not fused (``TaskType.fusable``: masked_lm) is refused by ensemble and stack with a one-line error naming
its type, and goes through merge and compare."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtfuse.tasks.types import TASK_TYPES
from tests.helpers.cli import run_cli

WORDS = ["good", "bad", "film", "plot", "actor", "London", "Paris", "great", "dull", "scene"]


def _sentence(rng: random.Random, n: int = 6) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _classification(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    return {"text": " ".join(s), "label": "pos" if s.count("good") >= s.count("bad") else "neg"}


def _pair(rng: random.Random) -> dict[str, Any]:
    a, b = _sentence(rng), _sentence(rng)
    return {"a": " ".join(a), "b": " ".join(b), "label": "same" if a[0] == b[0] else "other"}


def _regression(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    return {"text": " ".join(s), "label": float(s.count("good")) + 0.5 * s.count("great")}


def _multilabel(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    labels = [t for t, w in (("people", "actor"), ("places", "London"), ("story", "plot")) if w in s]
    return {"text": " ".join(s), "label": labels or ["none"]}


def _token(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    return {"tokens": s, "tags": ["B-LOC" if w in ("London", "Paris") else "O" for w in s]}


def _multiple_choice(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    endings = [" ".join(_sentence(rng, 3)) for _ in range(3)]
    right = rng.randrange(3)
    endings[right] = "good " + endings[right]
    return {"context": " ".join(s), "endings": endings, "label": right}


def _generation(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng, 4)
    return {"source": " ".join(s), "target": [" ".join(reversed(s)), " ".join(s[:2])]}


def _intent_slots(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    slots = ["B-city" if w in ("London", "Paris") else "O" for w in s]
    return {"tokens": s, "label": {"intent": "trip" if "B-city" in slots else "review", "slots": slots}}


def _srl(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng)
    k = rng.randrange(len(s))
    roles = [
        "V" if j == k else "ARG0" if j == k - 1 else "ARG1" if j == k + 1 else "O" for j in range(len(s))
    ]
    return {"words": s, "predicate": k, "roleset": f"{s[k]}.01", "roles": roles}


def _span_qa(rng: random.Random) -> dict[str, Any]:
    s = _sentence(rng, 8)
    city = rng.choice(["London", "Paris"])
    context = " ".join(s[:4] + ["in", city] + s[4:])
    start = len(" ".join(s[:4] + ["in"])) + 1
    return {
        "question": f"where is the {s[0]} ?",
        "context": context,
        "answers": [{"text": city, "answer_start": start}],
    }


def _masked_lm(rng: random.Random) -> dict[str, Any]:
    return {"text": " ".join(_sentence(rng, 8))}  # unlabelled text


#: task type -> (row builder, text_fields, label_field, metrics)
DATA: dict[str, tuple[Any, list[str], str]] = {
    "classification": (_classification, ["text"], "label"),
    "pair_classification": (_pair, ["a", "b"], "label"),
    "regression": (_regression, ["text"], "label"),
    "multilabel": (_multilabel, ["text"], "label"),
    "token_classification": (_token, ["tokens"], "tags"),
    "multiple_choice": (_multiple_choice, ["context", "endings"], "label"),
    "generation": (_generation, ["source"], "target"),
    "intent_slots": (_intent_slots, ["tokens"], "label"),
    "srl": (_srl, ["words", "predicate"], "roles"),
    "span_qa": (_span_qa, ["question", "context"], "answers"),
    "masked_lm": (_masked_lm, ["text"], "label"),  # the label field is not read (there is none)
}


def test_every_registered_task_type_has_contract_data() -> None:
    assert set(TASK_TYPES.names()) == set(DATA), "add synthetic data for the new task type to DATA"


@pytest.mark.parametrize("ttype", sorted(DATA))
def test_task_type_through_every_command(tmp_path: Path, tiny_model_dir: Path, ttype: str) -> None:
    build, text_fields, label_field = DATA[ttype]
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 48), ("dev", 24)):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(build(rng)) + "\n" for _ in range(n)), encoding="utf-8")
        files[split] = str(path)
    cfg = {
        "tasks": [
            {
                "name": "t",
                "type": ttype,
                "data": {"format": "jsonl", "files": files},
                "text_fields": text_fields,
                "label_field": label_field,
            }
        ],
        "model": {"name_or_path": str(tiny_model_dir)},
        "cache_dir": str(tmp_path / "cache"),
        "train": {"batch_size": 8, "max_steps": 3, "lr": 1e-3, "tensorboard": False, "progress": False},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")

    def ok(*argv: object) -> str:
        code, out, err = run_cli(list(argv))
        assert code == 0, f"mtfuse {' '.join(map(str, argv))}: exit {code}\n{out}\n{err}"
        return out

    runs = [tmp_path / "r1", tmp_path / "r2"]
    for seed, run in enumerate(runs):
        ok("train", tmp_path / "cfg.yaml", "--output", run, f"train.seed={seed}")
    ok("evaluate", runs[0], "--split", "dev")
    metrics = json.loads((runs[0] / "metrics-dev.json").read_text())
    assert metrics["examples"] == {"t": 24} and set(metrics["tasks"]["t"]) == set(
        TASK_TYPES.get(ttype).default_metrics
    )

    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({f: r[f] for f in text_fields}) + "\n" for r in (build(rng), build(rng)))
    )
    ok("predict", runs[0], "--task", "t", "--input", inp, "--output", tmp_path / "pred.jsonl")
    preds = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(preds) == 2

    if not TASK_TYPES.get(ttype).fusable:  # no outputs to fuse: refused, in one line naming the type
        for argv in (
            ["ensemble", *runs, "--method", "mean", "--output", tmp_path / "ens"],
            ["stack", *runs, "--folds", "3", "--output", tmp_path / "stack"],
        ):
            code, out, err = run_cli(argv)
            assert code == 2 and "error:" in err and ttype in err and "Traceback" not in out + err, err
            assert not Path(argv[-1]).exists()  # nothing written
        ok("merge", *runs, "--method", "greedy_soup", "--output", tmp_path / "merged")
        ok(
            "predict",
            tmp_path / "merged",
            "--task",
            "t",
            "--input",
            inp,
            "--output",
            tmp_path / "pred-m.jsonl",
        )
        ok("compare", *runs, tmp_path / "merged", "--latency", "0", "--output", tmp_path / "cmp")
        assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["entries"]
        assert "t" in json.loads((tmp_path / "merged" / "metrics.json").read_text())["tasks"]
        return

    ok("ensemble", *runs, "--method", "mean", "--output", tmp_path / "ens")
    if TASK_TYPES.get(ttype).fused_as_text:  # texts: no probabilities to stack; the type says so
        code, out, err = run_cli(["stack", *runs, "--folds", "3", "--output", tmp_path / "stack"])
        assert code == 2 and "stacking" in err and "texts" in err and not (tmp_path / "stack").exists()
        ok("ensemble", *runs, "--method", "vote", "--output", tmp_path / "stack")  # compared in its place
    else:
        ok("stack", *runs, "--folds", "3", "--output", tmp_path / "stack")
    ok("merge", *runs, "--method", "greedy_soup", "--output", tmp_path / "merged")  # same task: a soup
    ok("predict", tmp_path / "ens", "--task", "t", "--input", inp, "--output", tmp_path / "pred-ens.jsonl")
    ok(
        "compare",
        *runs,
        tmp_path / "ens",
        tmp_path / "stack",
        tmp_path / "merged",
        "--latency",
        "0",
        "--output",
        tmp_path / "cmp",
    )
    systems = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert systems  # a comparison was written
    for d in ("ens", "stack", "merged"):
        m = json.loads((tmp_path / d / "metrics.json").read_text())
        assert "t" in m["tasks"], d
