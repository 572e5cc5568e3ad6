"""Config loading: overrides, unknown keys and method names, {data_dir} substitution, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtfuse import config as config_mod
from mtfuse.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "data_dir": "/data",
    "tasks": [
        {"name": "a", "type": "classification", "data": {"format": "glue", "path": "{data_dir}/glue/CoLA"}},
        {"name": "b", "type": "regression", "data": {"format": "glue", "path": "{data_dir}/glue/STS-B"}},
    ],
}


def write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_defaults_and_data_dir_substitution(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE))
    assert cfg.train.lr == 3e-5 and cfg.train.batch_size == 32
    assert cfg.tasks[0].data.path == "/data/glue/CoLA"
    cfg2 = config_mod.load(write(tmp_path, BASE), ["data_dir=/elsewhere"])
    assert cfg2.tasks[1].data.path == "/elsewhere/glue/STS-B"


def test_dotted_overrides_parse_values_and_address_tasks_by_name(tmp_path: Path) -> None:
    cfg = config_mod.load(
        write(tmp_path, BASE),
        [
            "train.lr=1e-4",
            "train.max_steps=7",
            "tasks.b.max_length=64",
            "sampling.method=temperature",
            "sampling.temperature=3",
            "subset.train=10",
        ],
    )
    assert cfg.train.lr == 1e-4 and cfg.train.max_steps == 7
    assert cfg.tasks[1].max_length == 64 and cfg.tasks[0].max_length == 128
    assert cfg.sampling.model_extra == {"temperature": 3, "cap": None}  # resolved: defaults written out
    assert cfg.subset.train == 10


def test_precision_no_unquoted_means_fp32(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `no` as false; `precision: no` and `train.precision=no` still mean fp32."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE) + "train:\n  precision: no\n")
    assert config_mod.load(path).train.precision == "no"
    assert config_mod.load(write(tmp_path, BASE), ["train.precision=no"]).train.precision == "no"
    with pytest.raises(ConfigError, match="train.precision"):
        config_mod.load(write(tmp_path, BASE), ["train.precision=yes"])  # true is not a precision


def test_unknown_key_lists_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config_mod.load(write(tmp_path, BASE), ["train.lrr=1"])
    msg = str(e.value)
    assert "unknown config key 'train.lrr'" in msg and "lr" in msg and "batch_size" in msg
    with pytest.raises(ConfigError, match="unknown config key 'tasks.0.bogus'.*max_length"):
        config_mod.load(write(tmp_path, {**BASE, "tasks": [{**BASE["tasks"][0], "bogus": 1}]}))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("tasks.a.type=nope", r"unknown task type 'nope'; choose from \[.*classification.*regression"),
        ("sampling.method=nope", r"unknown sampler 'nope'; choose from \[.*proportional"),
        ("weighting.method=nope", r"unknown weighting 'nope'; choose from \[.*equal.*static"),
        ("tasks.a.data.format=xml", r"unknown data format 'xml'; choose from \[.*conll"),
        ("sampling.temp=2", r"unknown config key 'sampling.temp'"),
        ("tasks.zzz.max_length=3", r"no task named 'zzz'"),
        ("train.optimizer=adam", r"train.optimizer"),
        ("nokey", r"key=value"),
    ],
)
def test_bad_names_are_clear_errors(tmp_path: Path, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        config_mod.load(write(tmp_path, BASE), [override])


def test_duplicate_tasks_and_only_tasks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate task names"):
        config_mod.load(write(tmp_path, {**BASE, "tasks": [BASE["tasks"][0]] * 2}))
    cfg = config_mod.load(write(tmp_path, BASE), ["only_tasks=[b]"])
    assert [t.name for t in cfg.tasks] == ["b"]


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config_mod.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_mod.load(bad)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE), ["train.lr=2e-5"])
    p = tmp_path / "resolved.yaml"
    p.write_text(config_mod.dump(cfg))
    assert config_mod.load(p) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path) -> None:
    cfg = config_mod.load(path)
    assert cfg.tasks


def test_the_demo_config_in_configs_is_the_packaged_one() -> None:
    """configs/demo.yaml is what `mtfuse demo` trains (src/mtfuse/resources/demo.yaml): they must not drift."""
    from mtfuse.demo import demo_config_path

    assert (ROOT / "configs" / "demo.yaml").read_text() == demo_config_path().read_text()
