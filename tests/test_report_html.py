"""`mtfuse report`: one self-contained HTML page from runs, fusions, a comparison and an affinity result."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mtfuse.compare import build_comparison
from mtfuse.html_report.inputs import read_comparison
from mtfuse.html_report.training import read_log
from tests.helpers.cli import fails, run_cli
from tests.helpers.fusion import SMALL_CONFIG, cls_task, fake_run, no_partial_output, trained_runs

SVG = re.compile(r"<svg\b.*?</svg>", re.S)
# an address outside the page, in any attribute or CSS url(): none may appear
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|xlink:href)\s*=\s*["']?\s*|url\(\s*["']?)(?:https?:|//|file:)""", re.I
)


def ok(argv: list[object]) -> str:
    code, out, err = run_cli(argv)
    assert code == 0, f"mtfuse {' '.join(map(str, argv))} failed ({code}):\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def systems(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, shared_data_dir: Path
) -> dict[str, Path]:
    """Tiny real runs (shared with the compare tests), an ensemble, a stack, a merge, a comparison of all of
    them (latency measured) and an affinity result."""
    runs = trained_runs(tmp_path_factory.getbasetemp() / "fusion_runs", tiny_model_dir, shared_data_dir)
    root = tmp_path_factory.mktemp("report")
    (root / "cfg.yaml").write_text(SMALL_CONFIG, encoding="utf-8")
    common = [
        f"model.name_or_path={tiny_model_dir}",
        f"data_dir={shared_data_dir}",
        f"cache_dir={root / 'cache'}",
        "subset.train=16",
        "train.progress=false",
    ]
    out = {**runs, **{k: root / k for k in ("st_stsb", "ens", "stack", "merged", "cmp", "aff")}}
    # a single-task run of another task, to merge with the sst2 one (a merge keeps one head per task)
    ok(["train", root / "cfg.yaml", *common, "only_tasks=[stsb]", "subset.eval=24", "train.max_steps=2",
        "--output", out["st_stsb"]])  # fmt: skip
    ok(["ensemble", runs["mt1"], runs["mt2"], "--output", out["ens"]])
    ok(["stack", runs["mt1"], runs["mt2"], "--folds", "3", "--output", out["stack"]])
    ok(["merge", runs["st"], out["st_stsb"], "--method", "linear", "--output", out["merged"]])
    compared = [out[k] for k in ("st", "st_stsb", "mt1", "mt2", "ens", "stack", "merged")]
    ok(["compare", *compared, "--latency", "2", "--output", out["cmp"]])
    ok(["affinity", root / "cfg.yaml", *common, "--steps", "2", "--output", out["aff"]])
    return out


class Sections(HTMLParser):
    """The page's sections (id -> text) and every attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.current: str | None = None
        self.ids: list[str] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a["id"]
            self.sections[self.current or ""] = ""
        if tag == "body":
            self.body = {k: v or "" for k, v in a.items()}
        if "id" in a:
            self.ids.append(a["id"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.sections[self.current] += data


def parse(html: str) -> Sections:
    p = Sections()
    p.feed(html)
    return p


def test_report_shows_every_section(systems: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    # the comparison, one of its runs again (shown once) and the affinity result
    printed = ok(["report", systems["cmp"], systems["mt1"], systems["aff"], "--output", out])
    assert sorted(p.name for p in out.iterdir()) == [".mtfuse.json", "report.html"]
    assert str(out / "report.html") in " ".join(printed.split())
    html = (out / "report.html").read_text(encoding="utf-8")
    page = parse(html)
    assert list(page.sections) == ["comparison", "scores", "cost", "training", "conflicts", "affinity"]

    cmp = json.loads((systems["cmp"] / "compare.json").read_text())
    names = [e["name"] for e in cmp["entries"]]
    for name in names:  # every system once in each comparison table
        assert page.sections["comparison"].count(name) >= 3
    assert "Normalised to single-task" in page.sections["comparison"]
    assert "ms/example (batch 1)" in page.sections["comparison"]
    for e in cmp["entries"]:  # the latency measured by compare comes through
        b1 = e["cost"]["latency_ms_per_example"]["b1"]
        assert b1 is not None and f"{b1:.2f}" in page.sections["comparison"]

    # learning curves of each trained run, with what its log holds
    for run in ("st", "mt1", "mt2"):
        log = read_log(systems[run])
        assert log is not None and log.evals and log.train
        assert f"{run} ({systems[run]})" in page.sections["training"]
        assert f"{run}: every dev metric of every task at each evaluation" in page.sections["training"]
        assert f"{run}: the mean train loss of each task" in page.sections["training"]
    for run in ("mt1", "mt2"):  # weights and sampling probabilities of several tasks
        assert f"{run}: the loss weight of each task" in page.sections["training"]
    assert (
        "st has one task: its weight and sampling probability are 1 throughout." in page.sections["training"]
    )
    # the conflict matrix of each multi-task run's last evaluation, naming its step
    for run in ("mt1", "mt2"):
        last = read_log(systems[run]).last_conflicts()
        assert last is not None
        assert f"{run}: cosine of the task gradients on the shared parameters at step {last['step']}" in html
    assert "st: no gradient_cosine" in page.sections["conflicts"]  # one task: nothing to conflict with
    # the affinity heatmap and every recommended grouping
    aff = json.loads((systems["aff"] / "affinity.json").read_text())
    text = " ".join(page.sections["affinity"].split())
    for options in aff["groupings"].values():
        for o in options:
            assert " | ".join(", ".join(g) for g in o["groups"]) in text
            assert f"{o['predicted_affinity']:+.4f}" in text
    assert "Inter-task affinity" in text

    svgs = SVG.findall(html)
    assert svgs and len(svgs) == html.count("<figure")  # each figure one inline SVG
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and len(root) > 0
    assert html.count("<figcaption>") == len(svgs)  # every figure has its caption
    assert not EXTERNAL.findall(html)  # no external file, CDN or link
    assert "<link" not in html and "<script src" not in html and "<img" not in html
    assert len(page.ids) == len(set(page.ids))  # several SVGs in one page: no id given twice


def test_report_escapes_names(systems: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / 'run <b>&"x'
    shutil.copytree(systems["st"], odd)
    out = tmp_path / "rep"
    ok(["report", odd, "--output", out])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>" not in html and "run &lt;b&gt;&amp;&quot;x" in html
    for svg in SVG.findall(html):
        ET.fromstring(svg)  # the name in the figures' legends is escaped too


def test_sections_without_data_say_why(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "st", {"a": cls_task(np.array([0.8, 0.2, 0.6]), np.array([1, 0, 0]))})
    out = tmp_path / "rep"
    printed = " ".join(ok(["report", run, "--output", out]).split())
    page = parse((out / "report.html").read_text(encoding="utf-8"))
    assert f"st: no {run / 'log.jsonl'}, so no curves." in " ".join(page.sections["training"].split())
    assert "No training log" in page.sections["conflicts"]
    assert "No affinity directory among the inputs" in page.sections["affinity"]
    assert "note: No affinity directory among the inputs" in printed  # the CLI says it too
    assert "st" in page.sections["comparison"]

    aff_only = tmp_path / "aff"
    aff_only.mkdir()
    (aff_only / "affinity.json").write_text(
        json.dumps({"tasks": ["a", "b"], "affinity": [[0.1, -0.2], [0.05, 0.3]], "groupings": {}})
    )
    ok(["report", aff_only, "--output", tmp_path / "rep2"])
    page = parse((tmp_path / "rep2" / "report.html").read_text(encoding="utf-8"))
    assert "nothing to compare" in page.sections["comparison"]
    assert "no groupings in" in page.sections["affinity"]


def test_bad_inputs_and_existing_output(systems: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    missing = tmp_path / "nope"
    fails(["report", missing, "--output", out], f"{missing}: not found")
    junk = tmp_path / "junk"
    (junk / "sub").mkdir(parents=True)
    (junk / "notes.txt").write_text("mine")
    fails(
        ["report", junk, "--output", out], f"{junk}: not a run, ensemble, stack, merge, compare or affinity"
    )
    bad = tmp_path / "badcmp"
    bad.mkdir()
    (bad / "compare.json").write_text('{"entries": [{"name": "x"}]}')
    fails(["report", bad, "--output", out], f"{bad / 'compare.json'} (entry 1): not a comparison entry")
    (bad / "compare.json").write_text("{not json")
    fails(["report", bad, "--output", out], f"{bad / 'compare.json'}: cannot be read as JSON")
    fails(["report", systems["st"], "--output", out, "--reference", "median"], "--reference must be one of")
    no_partial_output(out)

    ok(["report", systems["st"], "--output", out])
    before = (out / "report.html").read_bytes()
    fails(["report", systems["mt1"], "--output", out], str(out), "--overwrite")
    assert (out / "report.html").read_bytes() == before
    fails(
        ["report", systems["st"], "--output", systems["cmp"], "--overwrite"],
        "holds an output of `mtfuse compare`",
    )
    ok(["report", systems["mt1"], "--output", out, "--overwrite"])
    assert (out / "report.html").read_bytes() != before


def test_compare_directory_reads_back_as_its_comparison(systems: dict[str, Path]) -> None:
    """The systems of a compare.json, measurements included, give the same comparison again."""
    entries, how = read_comparison(systems["cmp"])
    saved = json.loads((systems["cmp"] / "compare.json").read_text())
    assert json.loads(json.dumps(build_comparison(entries, how))) == saved


def test_a_log_cut_mid_line_is_read(tmp_path: Path) -> None:
    eval_rec = {"step": 4, "event": "eval", "average": 50.0, "metrics": {"a": {"accuracy": 50.0}}}
    lines = [json.dumps({"step": 2, "lr": 0.1, "loss/a": 0.7}), json.dumps(eval_rec), '{"step": 6, "lr"']
    (tmp_path / "log.jsonl").write_text("\n".join(lines))
    log = read_log(tmp_path)
    assert log is not None and log.unreadable == 1
    assert [r["step"] for r in log.evals] == [4] and [r["step"] for r in log.train] == [2]
    assert log.tasks() == ["a"] and log.last_conflicts() is None


# ------------------------------------------------------------------------------------------ in a browser


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "chromium not installed (apt-get install chromium): the report is not opened in a browser"
        )
    return path


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_a_browser(systems: dict[str, Path], tmp_path: Path) -> None:
    browser = chromium()
    out = tmp_path / "rep"
    ok(["report", systems["cmp"], systems["aff"], "--output", out])
    page = out / "report.html"
    url = page.resolve().as_uri()
    # the page's own script records rendered figures, script errors and blocked loads on <body>
    dom = headless(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = parse(dom.stdout).body
    n_svg = len(SVG.findall(page.read_text(encoding="utf-8")))
    assert json.loads(body.get("data-errors", "null")) == []
    assert int(body["data-svgs"]) == n_svg and int(body["data-figures"]) == n_svg  # every figure has a size

    shot = tmp_path / "report.png"
    res = headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("MTFUSE_ARTIFACTS"):
        dest = Path(os.environ["MTFUSE_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, dest / "report.png")
