"""The README's commands work: set-up commands match CI, and the usage commands run (on a tiny model)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers.cli import exit_code as run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """Shell commands of the README's bash blocks, comments dropped, continuation lines joined."""
    out = []
    for block in bash_blocks():
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_setup_commands_and_ci_agree() -> None:
    setup = [c for c in commands() if c.startswith("bash setup.sh")]
    assert setup == ["bash setup.sh demo", "bash setup.sh test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash setup.sh test" in ci.splitlines()
    script = (ROOT / "setup.sh").read_text()
    assert 'pip install -q "torch==2.13.0"' in script


def test_readme_mtfuse_commands_run(
    tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run every `mtfuse ...` line of the README in order, in a scratch folder, with the tiny model and
    small subsets added (the commands themselves are unchanged otherwise)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "in.jsonl").write_text('{"sentence": "a gripping , funny film ."}\n')
    small = [
        f"model.name_or_path={tiny_model_dir}",
        f"cache_dir={tmp_path / 'cache'}",
        "subset.train=16",
        "subset.eval=20",
        "train.max_steps=2",
        "train.progress=false",
        f"data_dir={shared_data_dir}",
    ]
    ran = []
    for cmd in commands():
        argv = shlex.split(cmd)
        if argv[0] == "echo" and ">" in argv:
            continue  # the input file is written above
        if argv[0] != "mtfuse":
            continue
        argv = [a for a in argv[1:] if not a.startswith("data_dir=")]
        sub = argv[0] if argv[0] != "data" else "data check"
        if sub in ("train", "data check", "affinity"):
            argv += small
        if sub == "train" and "--resume" in argv:
            # resume the run the README trained just before, with its own config
            argv = [a for a in argv if not a.startswith(("model.", "cache_dir", "subset.", "data_dir"))]
            argv += ["train.max_steps=3"]
        code = run(argv)
        assert code == 0, f"README command failed: {cmd}"
        ran.append(sub)
    assert {"train", "evaluate", "predict", "data check"} <= set(ran)
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1


def test_readme_python_api(tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path) -> None:
    block = re.search(r"```python\n(.*?)```", README, flags=re.S)
    assert block is not None
    code = block.group(1).replace(
        '"data_dir=../shared/data"',
        f'"data_dir={shared_data_dir}", '
        f'"model.name_or_path={tiny_model_dir}", "cache_dir={tmp_path / "c"}", '
        '"train.progress=false"',
    )
    code = code.replace('"runs/glue-small"', repr(str(tmp_path / "run")))
    code = code.replace('"train.max_steps=50"', '"train.max_steps=2", "subset.eval=8"')
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert set(ns["metrics"]["tasks"]) == {"cola", "sst2", "mrpc", "rte", "wnli", "stsb", "conll"}
    assert ns["p"].predict_rows("sst2", [{"sentence": "fine"}])[0]["label"] in {"0", "1"}
