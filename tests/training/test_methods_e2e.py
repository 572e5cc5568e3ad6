"""Every weighting method and sharing architecture trains the GLUE + CoNLL config end to end (tiny model,
tiny subsets): the issue's "every method trains the config without error", checked for real."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtfuse import config as config_mod
from mtfuse.model import SHARING
from mtfuse.train import train
from mtfuse.weighting import WEIGHTINGS

ROOT = Path(__file__).resolve().parents[2]


def tiny_glue(tmp: Path, tiny_model_dir: Path, data: Path, extra: list[str]) -> config_mod.RunConfig:
    return config_mod.load(
        ROOT / "configs" / "glue.yaml",
        [
            f"data_dir={data}",
            f"model.name_or_path={tiny_model_dir}",
            f"cache_dir={tmp.parent / 'cache'}",
            "subset.train=8",
            "subset.eval=6",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.eval_every=2",
            "train.progress=false",
            "train.tensorboard=false",
            "train.lr=1e-3",
            *extra,
        ],
    )


@pytest.mark.parametrize("method", WEIGHTINGS.names())
def test_every_weighting_method_trains_glue_and_conll(
    method: str, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path
) -> None:
    cfg = tiny_glue(
        tmp_path, tiny_model_dir, shared_data_dir, ["train.step_mode=joint", f"weighting.method={method}"]
    )
    final = train(cfg, tmp_path / "run")
    assert set(final["tasks"]) == {"cola", "sst2", "mrpc", "rte", "wnli", "stsb", "conll"}
    assert math.isfinite(final["average"])
    evals = [
        json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"eval"' in x
    ]
    cos = evals[-1]["gradient_cosine"]["cosine"]
    assert len(cos) == 7 and all(abs(cos[i][i] - 1) < 1e-4 for i in range(7))  # conflict matrix is logged
    assert isinstance(evals[-1]["task_weights"], dict)


@pytest.mark.parametrize("sharing", SHARING.names())
def test_every_sharing_architecture_trains_glue_and_conll(
    sharing: str, tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path
) -> None:
    extra = [f"model.sharing.method={sharing}", "tasks.conll.layer=1"]
    if sharing == "adapters":
        extra.append("model.sharing.train_base=true")
    cfg = tiny_glue(tmp_path, tiny_model_dir, shared_data_dir, extra)
    final = train(cfg, tmp_path / "run")
    assert math.isfinite(final["average"])
    from mtfuse.evaluate import evaluate_run

    # the saved architecture loads and scores the same (on the dev subset training scored)
    again, _ = evaluate_run(tmp_path / "run", "dev", whole_splits=False)
    for task, ms in final["tasks"].items():
        for m, v in ms.items():
            assert again["tasks"][task][m] == pytest.approx(v, abs=1e-6)
