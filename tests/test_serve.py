"""`mtfuse serve`: the FastAPI app on tiny real run directories (every task type), dynamic batching, metrics,
malformed requests, the bounded queue, shutdown, and the CLI's errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mtfuse.predict import Predictor, load_predictor
from mtfuse.serve import Batcher, Metrics, ServeSettings, create_app
from tests.helpers.cli import fails
from tests.helpers.serving import INPUTS, NAMES, serve_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    return serve_runs(tmp_path_factory.mktemp("serve_runs"), tiny_model_dir)


@pytest.fixture(scope="module")
def predictor(runs: dict[str, Path]) -> Predictor:
    return Predictor(runs["run"], device="cpu")


@pytest.fixture(scope="module")
def client(predictor: Predictor):
    settings = ServeSettings(max_inputs=8, max_body_bytes=20_000, max_text_chars=2_000, device="cpu")
    with TestClient(create_app(predictor, settings)) as c:
        yield c


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value from the Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --------------------------------------------------------------------------------------------- endpoints


def test_tasks_health_ready_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True}
    tasks = client.get("/v1/tasks").json()["tasks"]
    assert {n: t["type"] for n, t in tasks.items()} == NAMES
    assert tasks["pair"]["text_fields"] == ["a", "b"] and tasks["reg"]["labels"] is None
    assert tasks["cls"]["labels"] == ["neg", "pos"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict_all", "/v1/tasks"} <= set(paths)


@pytest.mark.parametrize("task", sorted(NAMES))
def test_predict_every_task_type(client: TestClient, predictor: Predictor, task: str) -> None:
    """The server's records are the Predictor's (the task type's record()), input by input."""
    inputs = [INPUTS[task], INPUTS[task]]
    r = client.post("/v1/predict", json={"task": task, "inputs": inputs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == task
    assert body["predictions"] == predictor.predict_rows(task, [dict(x) for x in inputs])
    keys = {
        "cls": "label",
        "pair": "label",
        "reg": "score",
        "multilabel": "labels",
        "token": "tags",
        "mc": "choice",
    }
    assert keys[task] in body["predictions"][0]


def test_plain_strings_for_one_field_tasks(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"task": "cls", "inputs": ["good film", {"text": "bad plot"}]})
    assert r.status_code == 200
    assert [p["index"] for p in r.json()["predictions"]] == [0, 1]
    r = client.post("/v1/predict", json={"task": "token", "inputs": ["London is nice"]})
    assert r.json()["predictions"][0]["tokens"] == ["London", "is", "nice"]
    assert len(r.json()["predictions"][0]["tags"]) == 3


def test_predict_all_shares_one_encoder_pass(client: TestClient, predictor: Predictor) -> None:
    row = {k: v for x in INPUTS.values() for k, v in x.items()}  # every task's fields
    calls: list[list[str]] = []
    forward_all = predictor.model.forward_all

    def spy(batch: Any, tasks: list[str]) -> Any:
        calls.append(list(tasks))
        return forward_all(batch, tasks)

    predictor.model.forward_all = spy  # type: ignore[method-assign]
    try:
        r = client.post("/v1/predict_all", json={"inputs": [row, row]})
    finally:
        del predictor.model.forward_all
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["predictions"]) == set(NAMES) and out["skipped"] == {}
    assert ["cls", "reg", "multilabel"] in calls  # the tasks reading the same text: one forward_all
    assert len(calls) == 4  # + pair, token, multiple choice (other inputs)
    for task in NAMES:
        assert out["predictions"][task] == predictor.predict_rows(task, [dict(row), dict(row)]), task

    # plain strings: the one-field tasks; the others are listed as skipped
    r = client.post("/v1/predict_all", json={"inputs": ["good film"]})
    assert set(r.json()["predictions"]) == {"cls", "reg", "multilabel", "token"}
    assert set(r.json()["skipped"]) == {"pair", "mc"}
    r = client.post("/v1/predict_all", json={"inputs": [INPUTS["pair"]], "tasks": ["pair"]})
    assert set(r.json()["predictions"]) == {"pair"}


def test_metrics(client: TestClient) -> None:
    client.post("/v1/predict", json={"task": "cls", "inputs": ["good"]})
    client.post("/v1/predict", json={"task": "nope", "inputs": ["good"]})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert sample(text, "mtfuse_requests_total", endpoint="/v1/predict", status="200") >= 1
    assert sample(text, "mtfuse_requests_total", endpoint="/v1/predict", status="404") >= 1
    assert sample(text, "mtfuse_request_latency_seconds_count", endpoint="/v1/predict") >= 2
    assert sample(text, "mtfuse_batch_size_count") >= 1
    assert "mtfuse_queue_depth 0.0" in text
    assert sample(text, "mtfuse_inputs_total", task="cls") >= 1


# ----------------------------------------------------------------------------------------------- batching


async def _concurrent(app: Any, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))


def test_concurrent_requests_are_batched(predictor: Predictor) -> None:
    app = create_app(predictor, ServeSettings(max_batch=64, max_wait_ms=300))
    bodies = [{"task": "cls", "inputs": [f"film number {i}"]} for i in range(8)]
    responses = asyncio.run(_concurrent(app, bodies))
    assert [r.status_code for r in responses] == [200] * 8
    for i, r in enumerate(responses):  # each request gets its own rows back, indexed from 0
        assert r.json()["predictions"] == predictor.predict_rows("cls", [{"text": f"film number {i}"}])
    reg = app.state.metrics.registry
    calls = reg.get_sample_value("mtfuse_batch_size_count")
    assert reg.get_sample_value("mtfuse_batch_size_sum") == 8
    assert calls < 8  # fewer model calls than requests
    assert (
        reg.get_sample_value("mtfuse_batch_requests_bucket", {"le": "1.0"}) < calls
    )  # a call served several


def test_no_batching_with_max_batch_1(predictor: Predictor) -> None:
    app = create_app(predictor, ServeSettings(max_batch=1, max_wait_ms=50))
    responses = asyncio.run(_concurrent(app, [{"task": "cls", "inputs": ["a"]} for _ in range(4)]))
    assert all(r.status_code == 200 for r in responses)
    reg = app.state.metrics.registry
    assert reg.get_sample_value("mtfuse_batch_size_count") == 4
    assert reg.get_sample_value("mtfuse_batch_requests_bucket", {"le": "1.0"}) == 4


def test_a_bad_request_in_a_batch_fails_alone() -> None:
    """When a batched model call fails, each request is run alone: only the bad one gets the error."""

    def run(key: tuple[str, ...], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(r.get("bad") for r in rows):
            from mtfuse.errors import MtfuseError

            raise MtfuseError("bad row")
        return [{"index": i, "label": r["t"]} for i, r in enumerate(rows)]

    async def go() -> list[Any]:
        b = Batcher(run, max_batch=16, max_wait_ms=100, max_queue=8, metrics=Metrics())
        await b.start()
        futs = [b.submit(("one", "t"), [{"t": "x"}]), b.submit(("one", "t"), [{"bad": True}])]
        futs.append(b.submit(("one", "t"), [{"t": "y"}, {"t": "z"}]))
        out = await asyncio.gather(*futs, return_exceptions=True)
        await b.stop()
        return out

    a, bad, c = asyncio.run(go())
    assert a == [{"index": 0, "label": "x"}]
    assert isinstance(bad, Exception) and "bad row" in str(bad)
    assert c == [{"index": 0, "label": "y"}, {"index": 1, "label": "z"}]


def test_stop_finishes_queued_requests_then_refuses() -> None:
    def run(key: tuple[str, ...], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        time.sleep(0.05)
        return [dict(r) for r in rows]

    async def go() -> tuple[list[Any], bool]:
        b = Batcher(run, max_batch=2, max_wait_ms=0, max_queue=16, metrics=Metrics())
        await b.start()
        futs = [b.submit(("one", "t"), [{"i": i}]) for i in range(6)]
        await b.stop()  # graceful: what is queued is answered
        refused = False
        try:
            b.submit(("one", "t"), [{"i": 9}])
        except Exception:
            refused = True
        return [f.result() for f in futs], refused

    results, refused = asyncio.run(go())
    assert results == [[{"i": i}] for i in range(6)] and refused


# -------------------------------------------------------------------------------------- bad requests


def _malformed(client: TestClient) -> list[tuple[str, dict[str, Any], int]]:
    big = "word " * 500  # 2500 characters > max_text_chars 2000
    js = {"content-type": "application/json"}
    return [
        ("bad JSON", {"content": b'{"task": "cls", "inputs": [', "headers": js}, 422),
        ("not JSON at all", {"content": b"hello", "headers": js}, 422),
        ("non-UTF-8 bytes", {"content": b'{"task": "cls", "inputs": ["\xff\xfe\xfa"]}', "headers": js}, 400),
        ("empty body", {"content": b"", "headers": js}, 422),
        ("a JSON array", {"json": [1, 2]}, 422),
        ("task is a number", {"json": {"task": 3, "inputs": ["x"]}}, 422),
        ("inputs is a string", {"json": {"task": "cls", "inputs": "good film"}}, 422),
        ("an input is a number", {"json": {"task": "cls", "inputs": [3]}}, 422),
        ("inputs is null", {"json": {"task": "cls", "inputs": None}}, 422),
        ("empty inputs", {"json": {"task": "cls", "inputs": []}}, 422),
        ("missing task", {"json": {"inputs": ["x"]}}, 422),
        ("missing inputs", {"json": {"task": "cls"}}, 422),
        ("extra top-level field", {"json": {"task": "cls", "inputs": ["x"], "debug": True}}, 422),
        ("unknown task", {"json": {"task": "sentiment", "inputs": ["x"]}}, 404),
        ("missing text field", {"json": {"task": "pair", "inputs": [{"a": "x"}]}}, 422),
        ("extra field in an input", {"json": {"task": "cls", "inputs": [{"text": "x", "b": "y"}]}}, 422),
        ("plain string for a pair task", {"json": {"task": "pair", "inputs": ["x"]}}, 422),
        ("field value a number", {"json": {"task": "cls", "inputs": [{"text": 5}]}}, 422),
        ("list for a sentence task", {"json": {"task": "cls", "inputs": [{"text": ["a", "b"]}]}}, 422),
        (
            "words of a token task not strings",
            {"json": {"task": "token", "inputs": [{"tokens": [1, 2]}]}},
            422,
        ),
        ("choices as a string", {"json": {"task": "mc", "inputs": [{"context": "c", "endings": "x"}]}}, 422),
        ("one choice only", {"json": {"task": "mc", "inputs": [{"context": "c", "endings": ["x"]}]}}, 422),
        ("oversized text", {"json": {"task": "cls", "inputs": [big]}}, 413),
        ("a huge batch (> max_inputs)", {"json": {"task": "cls", "inputs": ["x"] * 9}}, 413),
        ("body over max_body_bytes", {"json": {"task": "cls", "inputs": ["word " * 1000] * 5}}, 413),
        (
            "predict_all: unknown task",
            {"json": {"inputs": ["x"], "tasks": ["nope"]}, "path": "/v1/predict_all"},
            404,
        ),
        ("predict_all: unknown field", {"json": {"inputs": [{"txt": "x"}]}, "path": "/v1/predict_all"}, 422),
        ("predict_all: no task fits", {"json": {"inputs": [{"a": "x"}]}, "path": "/v1/predict_all"}, 422),
        ("wrong method", {"method": "GET"}, 405),
        ("unknown path", {"path": "/v2/predict"}, 404),
    ]


def test_malformed_requests_get_4xx_and_the_server_keeps_answering(client: TestClient) -> None:
    cases = _malformed(client)
    assert len(cases) >= 15
    for name, req, status in cases:
        req = dict(req)
        method, path = req.pop("method", "POST"), req.pop("path", "/v1/predict")
        r = client.request(method, path, **req)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert "error" in r.json(), name
        ok = client.post("/v1/predict", json={"task": "cls", "inputs": ["still there?"]})
        assert ok.status_code == 200, f"after {name}: {ok.text}"
    assert client.get("/ready").status_code == 200


def test_422_names_the_field(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"task": "pair", "inputs": [{"a": "x"}]})
    assert "'b'" in r.json()["error"] and "inputs[0]" in r.json()["error"]
    r = client.post("/v1/predict", json={"task": "cls", "inputs": ["x", 3]})
    assert r.json()["error"].startswith("inputs[1]")
    r = client.post("/v1/predict", json={"task": "cls", "inputs": [{"text": 5}]})
    assert "inputs[0].text" in r.json()["error"]
    r = client.post("/v1/predict", json={"task": "cls", "inputs": ["x"], "debug": 1})
    assert r.json()["error"] == "debug: unknown field"
    r = client.post("/v1/predict", json={"task": "sentiment", "inputs": ["x"]})
    assert r.json()["tasks"] == list(NAMES)


def test_queue_full_answers_503_with_retry_after(predictor: Predictor) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Slow:
        def describe(self) -> dict[str, Any]:
            return predictor.describe()

        def predict_rows(self, task: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            entered.set()
            release.wait(10)
            return predictor.predict_rows(task, rows)

    app = create_app(Slow(), ServeSettings(max_queue=1, max_wait_ms=0))

    async def go() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                body = {"task": "cls", "inputs": ["x"]}
                first = asyncio.create_task(c.post("/v1/predict", json=body))
                while not entered.is_set():  # the worker holds the first request
                    await asyncio.sleep(0.01)
                second = asyncio.create_task(c.post("/v1/predict", json=body))  # waits in the queue (1)
                while app.state.batcher._items.__len__() < 1:
                    await asyncio.sleep(0.01)
                third = await c.post("/v1/predict", json=body)  # the queue is full
                metrics = await c.get("/metrics")
                release.set()
                done = await asyncio.gather(first, second)
                after = await c.post("/v1/predict", json=body)
                return [*done, after], third, metrics

    answered, full, metrics = asyncio.run(go())
    assert full.status_code == 503 and full.headers["retry-after"] == "1"
    assert "busy" in full.json()["error"]
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert sample(metrics.text, "mtfuse_queue_depth") == 1
    assert sample(metrics.text, "mtfuse_requests_total", endpoint="/v1/predict", status="503") == 1


# ------------------------------------------------------------------------------ ensemble, stack, merge


@pytest.mark.parametrize("kind", ["ensemble", "stack", "merge"])
def test_fused_directories(runs: dict[str, Path], kind: str) -> None:
    p = load_predictor(runs[kind], device="cpu")
    with TestClient(create_app(p)) as c:
        tasks = c.get("/v1/tasks").json()["tasks"]
        assert set(tasks) == set(NAMES)
        for task in NAMES:
            r = c.post("/v1/predict", json={"task": task, "inputs": [INPUTS[task]]})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == p.predict_rows(task, [dict(INPUTS[task])])
        row = {k: v for x in INPUTS.values() for k, v in x.items()}
        r = c.post("/v1/predict_all", json={"inputs": [row]})
        assert r.status_code == 200 and set(r.json()["predictions"]) == set(NAMES)
        assert r.json()["predictions"]["cls"] == p.predict_rows("cls", [dict(row)])


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_errors(tmp_path: Path, runs: dict[str, Path]) -> None:
    fails(["serve", tmp_path / "nope", "--port", "0"], "no such directory")
    (tmp_path / "empty").mkdir()
    fails(["serve", tmp_path / "empty", "--port", "0"], "not a run directory")
    fails(["serve", runs["run"], "--backend", "tensorrt", "--port", "0"], "--backend 'tensorrt'", "torch")
    fails(["serve", runs["run"], "--max-batch", "0", "--port", "0"], "--max-batch must be at least 1")
    fails(["serve", runs["run"], "--backend", "onnx", "--port", "0"], "no ONNX export", "mtfuse export")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fails(["serve", runs["run"], "--port", str(port)], f"cannot serve on 127.0.0.1:{port}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_command_and_graceful_sigterm(runs: dict[str, Path]) -> None:
    """The real command in a subprocess: it answers, and SIGTERM lets the request in flight finish."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "mtfuse.cli", "serve", str(runs["run"]), "--port", str(port)]
    cmd += ["--max-wait-ms", "1500"]  # the request below is held in the batcher while SIGTERM arrives
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not become ready")
        result: dict[str, Any] = {}

        def call() -> None:
            result["r"] = httpx.post(base + "/v1/predict", json={"task": "cls", "inputs": ["x"]}, timeout=30)

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)  # the request is in flight, waiting for its batch
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert result["r"].status_code == 200, result["r"].text
        assert json.loads(result["r"].text)["predictions"][0]["label"] in ("neg", "pos")
        # uvicorn shuts down, then re-raises the signal it caught: the process ends by SIGTERM
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert "Traceback" not in (proc.stdout.read() if proc.stdout else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
