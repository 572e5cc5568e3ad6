"""``subset_as``: an auxiliary task on another task's data draws that task's seeded subsets, so a masked_lm
task reads exactly the sentences the supervised task is trained on (and its train-holdout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtfuse.config import RunConfig, from_dict
from mtfuse.errors import ConfigError
from mtfuse.model import load_encoder
from mtfuse.tasks.prepare import HOLDOUT, prepare_tasks

COLA = {"format": "glue", "task": "CoLA", "path": "{data_dir}/glue/CoLA"}


def _config(shared: Path, model_dir: Path, tmp_path: Path, **mlm: object) -> RunConfig:
    tasks = [
        {"name": "cola", "type": "classification", "data": COLA},
        {"name": "cola_mlm", "type": "masked_lm", "data": COLA, "text_fields": ["sentence"], **mlm},
    ]
    return RunConfig.model_validate(
        {
            "data_dir": str(shared),
            "tasks": tasks,
            "model": {"name_or_path": str(model_dir)},
            "subset": {"train": 50, "eval": 30, "seed": 3},
            "cache_dir": str(tmp_path / "cache"),
        }
    )


def _texts(cfg: RunConfig, tok: object, split: str) -> dict[str, list[list[int]]]:
    cfg = from_dict(cfg.model_dump())  # substitutes {data_dir}, as loading a config file does
    tasks = prepare_tasks(cfg, tok, [split])
    return {n: [list(ids) for ids in t.splits[split].input_ids] for n, t in tasks.items()}


@pytest.mark.parametrize("split", ["train", "dev", HOLDOUT])
def test_the_auxiliary_task_reads_the_same_rows(
    shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, split: str
) -> None:
    _, tok = load_encoder(str(tiny_model_dir))
    same = _texts(_config(shared_data_dir, tiny_model_dir, tmp_path, subset_as="cola"), tok, split)
    assert len(same["cola"]) == (50 if split == "train" else 30)
    assert same["cola_mlm"] == same["cola"]
    # without subset_as the draw is seeded by the task's own name: other rows of the same file
    own = _texts(_config(shared_data_dir, tiny_model_dir, tmp_path), tok, split)
    assert own["cola"] == same["cola"] and own["cola_mlm"] != own["cola"]


def test_subset_as_must_name_a_task(shared_data_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    raw = _config(shared_data_dir, tiny_model_dir, tmp_path).model_dump()
    raw["tasks"][1]["subset_as"] = "colla"
    with pytest.raises(ConfigError, match=r"tasks\.cola_mlm\.subset_as: no task named 'colla'"):
        from_dict(raw)
