"""`mtfuse serve RUN_DIR`: an HTTP prediction server (FastAPI + uvicorn), a thin adapter over the Predictor.

Endpoints: ``POST /v1/predict`` (``{"task": ..., "inputs": [...]}``), ``POST /v1/predict_all`` (every task,
or ``"tasks": [...]``, on the same inputs), ``GET /v1/tasks``, ``/health`` (the process answers), ``/ready``
(the model is loaded and the batcher runs), ``/metrics`` (Prometheus), ``/docs`` (OpenAPI).

An input is an object of the task's text fields (``{"sentence": "..."}``, both fields of a pair task, a token
task's words as a string or a list, a multiple-choice task's context and list of choices) or, for a task with
one text field, a plain string. Records are the task type's (``TaskType.record``), as ``mtfuse predict``
writes them.

Dynamic batching: requests go into a bounded queue; one worker takes the oldest and keeps collecting until it
has ``max_batch`` rows or ``max_wait_ms`` have passed, then runs the model in a thread, one call per task (or
per task list for predict_all) over the rows of every request it collected. ``max_batch = 1`` switches
cross-request batching off. A full queue answers 503 with ``Retry-After``; a body over ``max_body_bytes``, more
than ``max_inputs`` inputs or a text over ``max_text_chars`` characters answers 413; a malformed request 422
(naming the field), an unknown task 404 (listing the tasks). On SIGINT / SIGTERM uvicorn stops accepting
connections and lets the requests in flight finish; the batcher then drains its queue before the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from mtfuse.errors import MtfuseError

# ------------------------------------------------------------------------------------------ settings


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32  # rows per model call (1: no cross-request batching)
    max_wait_ms: float = 5.0  # how long the worker waits for more requests to fill a batch
    max_queue: int = 256  # requests waiting for the model; more: 503 + Retry-After
    max_inputs: int = 256  # inputs per request; more: 413
    max_body_bytes: int = 1_000_000  # request body; more: 413
    max_text_chars: int = 20_000  # characters per input (all its fields); more: 413
    backend: str = "torch"
    device: str | None = None
    precision: str = "fp32"  # mtfuse.predict.PRECISIONS
    threads: int | None = None  # torch / onnxruntime intra-op threads (default: torch's)
    retry_after_s: int = 1
    graceful_shutdown_s: float = 30.0

    def check(self) -> ServeSettings:
        positive = ("max_batch", "max_queue", "max_inputs", "max_body_bytes", "max_text_chars")
        for name in positive:
            if getattr(self, name) < 1:
                raise MtfuseError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise MtfuseError(f"--threads must be at least 1, got {self.threads}")
        if self.max_wait_ms < 0:
            raise MtfuseError(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise MtfuseError(f"--port must be 0..65535, got {self.port}")
        from mtfuse.predict import check_backend, check_precision

        check_backend(self.backend)
        check_precision(self.precision)
        return self


# ------------------------------------------------------------------------------------------ schemas

Text = Union[StrictStr, list[StrictStr]]  # noqa: UP007  (pydantic reads the union at runtime)
Row = Union[StrictStr, dict[str, Text]]  # noqa: UP007


class PredictRequest(BaseModel):
    """One task on a list of inputs."""

    model_config = ConfigDict(extra="forbid")
    task: StrictStr = Field(min_length=1, description="a task name (GET /v1/tasks lists them)")
    inputs: list[Row] = Field(
        min_length=1,
        description="objects of the task's text fields, or plain strings for a task with one text field",
    )


class PredictAllRequest(BaseModel):
    """Every task (or the listed ones) on the same inputs."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Row] = Field(min_length=1, description="objects carrying the text fields of the tasks")
    tasks: list[StrictStr] | None = Field(
        None, description="tasks to run (default: every task whose text fields the inputs carry)"
    )


class RequestError(Exception):
    """An answer other than 200: status, message and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# ------------------------------------------------------------------------------------------ metrics


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps can live in one process)."""

    ENDPOINTS = ("/v1/predict", "/v1/predict_all", "/v1/tasks", "/health", "/ready", "/metrics")

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mtfuse_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mtfuse_request_latency_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "mtfuse_batch_size",
            "rows per model call (inputs of every request batched together)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "mtfuse_batch_requests",
            "requests per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mtfuse_queue_depth", "requests waiting for the model", registry=self.registry
        )
        self.inputs = Counter("mtfuse_inputs", "inputs predicted, by task", ["task"], registry=self.registry)

    def endpoint(self, path: str) -> str:
        return path if path in self.ENDPOINTS else "other"  # unknown paths must not grow the label set


# ------------------------------------------------------------------------------------------ batching


@dataclass
class _Item:
    key: tuple[str, ...]  # ("one", task) or ("all", task, task, ...)
    rows: list[dict[str, Any]]
    future: asyncio.Future = field(repr=False)


class QueueFull(Exception):
    pass


class Closing(Exception):
    pass


class Batcher:
    """A bounded queue of requests and one worker that batches them across requests and runs ``run(key,
    rows)`` in a thread (one at a time). ``run`` returns a list of records (key ``("one", task)``) or
    ``{task: records}`` (key ``("all", *tasks)``), one record per row."""

    def __init__(
        self,
        run: Callable[[tuple[str, ...], list[dict[str, Any]]], Any],
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self.run, self.metrics = run, metrics
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self._items: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self.closing

    async def start(self) -> None:
        self._wakeup, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mtfuse-model")
        self.closing = False
        self._task = asyncio.create_task(self._loop(), name="mtfuse-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, finish the queued ones, stop the worker."""
        self.closing = True
        if self._task is None:
            return
        deadline = time.monotonic() + timeout
        while (self._items or not self._idle.is_set()) and time.monotonic() < deadline:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for item in self._items:  # past the timeout: answer, never leave a request hanging
            if not item.future.done():
                item.future.set_exception(Closing())
        self._items.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = None

    def submit(self, key: tuple[str, ...], rows: list[dict[str, Any]]) -> asyncio.Future:
        if self.closing or self._task is None:
            raise Closing()
        if len(self._items) >= self.max_queue:
            raise QueueFull()
        fut = asyncio.get_running_loop().create_future()
        self._items.append(_Item(key, rows, fut))
        self.metrics.queue_depth.set(len(self._items))
        self._wakeup.set()  # type: ignore[union-attr]
        return fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None and self._idle is not None
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._idle.clear()
            batch = [self._items.popleft()]
            rows = len(batch[0].rows)
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                if self._items:
                    if rows + len(self._items[0].rows) > self.max_batch:
                        break
                    item = self._items.popleft()
                    batch.append(item)
                    rows += len(item.rows)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)  # an Event: safe to time out
                except asyncio.TimeoutError:
                    break
            self.metrics.queue_depth.set(len(self._items))
            try:
                await self._run_batch(batch)
            except Exception as e:  # never let the worker die
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
            finally:
                if not self._items:
                    self._idle.set()

    async def _run_batch(self, batch: list[_Item]) -> None:
        groups: dict[tuple[str, ...], list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.key, []).append(item)
        for key, items in groups.items():
            items = [it for it in items if not it.future.done()]  # clients that went away
            if not items:
                continue
            try:
                out = await self._call(key, [r for it in items for r in it.rows], len(items))
            except Exception as e:
                if len(items) == 1:
                    items[0].future.set_exception(e)
                    continue
                for it in items:  # one bad request must not fail the others batched with it
                    try:
                        res = await self._call(key, it.rows, 1)
                    except Exception as e1:
                        if not it.future.done():
                            it.future.set_exception(e1)
                    else:
                        _resolve(it, key, res, 0)
                continue
            start = 0
            for it in items:
                _resolve(it, key, out, start)
                start += len(it.rows)

    async def _call(self, key: tuple[str, ...], rows: list[dict[str, Any]], n_requests: int) -> Any:
        self.metrics.batch_rows.observe(len(rows))
        self.metrics.batch_requests.observe(n_requests)
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._executor, self.run, key, rows)
        for task in key[1:]:
            self.metrics.inputs.labels(task).inc(len(rows))
        return out


def _resolve(item: _Item, key: tuple[str, ...], out: Any, start: int) -> None:
    if item.future.done():
        return
    n = len(item.rows)

    def part(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "index": i} if "index" in r else r for i, r in enumerate(recs[start : start + n])]

    item.future.set_result(part(out) if key[0] == "one" else {t: part(r) for t, r in out.items()})


# ------------------------------------------------------------------------------------------ inputs


def rows_for(
    task: str, info: dict[str, Any], inputs: list[Any], max_chars: int, allow_extra: bool = False
) -> list[dict[str, Any]]:
    """Request inputs as rows of ``task``'s text fields, checked as the task type reads them."""
    from mtfuse.errors import DataError
    from mtfuse.tasks.features import texts_of
    from mtfuse.tasks.types import TASK_TYPES

    fields = info["text_fields"]
    rows = []
    for i, x in enumerate(inputs):
        where = f"inputs[{i}]"
        if isinstance(x, str):
            if len(fields) != 1:
                raise RequestError(
                    422, f"{where}: task '{task}' reads the fields {fields}; give an object with each of them"
                )
            x = {fields[0]: x}
        missing = [f for f in fields if f not in x]
        if missing:
            raise RequestError(422, f"{where}: missing field '{missing[0]}' (task '{task}' reads {fields})")
        extra = [k for k in x if k not in fields]
        if extra and not allow_extra:
            raise RequestError(422, f"{where}: unknown field '{extra[0]}' (task '{task}' reads {fields})")
        size = sum(len(v) if isinstance(v, str) else sum(len(s) for s in v) for v in x.values())
        if size > max_chars:
            raise RequestError(413, f"{where}: {size} characters; the limit is {max_chars} per input")
        rows.append({**x, "_where": where})
    ttype = TASK_TYPES.get(info["type"])
    try:
        texts_of(rows, fields, ttype.token_level, ttype)  # the type's own checks (text, words, choices)
    except DataError as e:
        raise RequestError(422, f"task '{task}': {e}") from None
    return rows


# ------------------------------------------------------------------------------------------ the app


def create_app(predictor: Any, settings: ServeSettings | None = None) -> Any:
    """The FastAPI app over a loaded predictor (``Predictor`` or ``EnsemblePredictor``)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = (settings or ServeSettings()).check()
    metrics = Metrics()
    tasks: dict[str, dict[str, Any]] = predictor.describe()

    def run(key: tuple[str, ...], rows: list[dict[str, Any]]) -> Any:
        if key[0] == "one":
            return predictor.predict_rows(key[1], rows)
        return predictor.predict_all(list(key[1:]), rows)

    batcher = Batcher(run, settings.max_batch, settings.max_wait_ms, settings.max_queue, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop(settings.graceful_shutdown_s)

    app = FastAPI(
        title="mtfuse",
        description="Predictions of one multi-task model (one encoder, one head per task).",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc.errors())
        first = detail[0] if detail else {"field": "body", "msg": "invalid request"}
        return error(422, f"{first['field']}: {first['msg']}", detail=detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400:  # FastAPI's answer to a body it could not decode (e.g. not UTF-8)
            message = f"{message} (send UTF-8 JSON)"
        return error(exc.status_code, message, headers=getattr(exc, "headers", None))

    def check_size(inputs: list[Any]) -> None:
        if len(inputs) > settings.max_inputs:
            raise RequestError(
                413, f"inputs: {len(inputs)} inputs; the limit is {settings.max_inputs} per request"
            )

    async def predict(key: tuple[str, ...], rows: list[dict[str, Any]]) -> Any:
        try:
            fut = batcher.submit(key, rows)
        except QueueFull:
            raise RequestError(503, "the server is busy (request queue full); retry later") from None
        except Closing:
            raise RequestError(503, "the server is shutting down") from None
        try:
            return await fut
        except Closing:
            raise RequestError(503, "the server is shutting down") from None
        except MtfuseError as e:
            raise RequestError(422, str(e)) from None

    @app.post("/v1/predict", summary="Predict one task on a list of inputs")
    async def predict_one(body: PredictRequest) -> dict[str, Any]:
        if body.task not in tasks:
            raise RequestError(
                404, f"unknown task '{body.task}'; choose from [{', '.join(tasks)}]", tasks=list(tasks)
            )
        check_size(body.inputs)
        rows = rows_for(body.task, tasks[body.task], body.inputs, settings.max_text_chars)
        return {"task": body.task, "predictions": await predict(("one", body.task), rows)}

    @app.post("/v1/predict_all", summary="Predict every task (or the listed ones) on the same inputs")
    async def predict_all(body: PredictAllRequest) -> dict[str, Any]:
        check_size(body.inputs)
        known = {f for info in tasks.values() for f in info["text_fields"]}
        for i, x in enumerate(body.inputs):
            extra = [k for k in x if k not in known] if isinstance(x, dict) else []
            if extra:
                raise RequestError(
                    422,
                    f"inputs[{i}]: unknown field '{extra[0]}'; the tasks read [{', '.join(sorted(known))}]",
                )
        skipped: dict[str, str] = {}
        if body.tasks is not None:
            unknown = [t for t in body.tasks if t not in tasks]
            if unknown:
                raise RequestError(
                    404, f"unknown task '{unknown[0]}'; choose from [{', '.join(tasks)}]", tasks=list(tasks)
                )
            chosen = list(dict.fromkeys(body.tasks))
        else:
            chosen = []
            for name, info in tasks.items():
                fields = info["text_fields"]
                has = all(
                    (isinstance(x, str) and len(fields) == 1)
                    or (isinstance(x, dict) and all(f in x for f in fields))
                    for x in body.inputs
                )
                if has:
                    chosen.append(name)
                else:
                    skipped[name] = f"the inputs do not all carry its text fields {fields}"
            if not chosen:
                raise RequestError(
                    422,
                    "inputs: no task's text fields are all present; GET /v1/tasks lists each task's fields",
                    skipped=skipped,
                )
        rows = [{}] * len(body.inputs)
        for name in chosen:  # each task's checks; the rows carry every chosen task's fields
            checked = rows_for(name, tasks[name], body.inputs, settings.max_text_chars, allow_extra=True)
            rows = [{**a, **b} for a, b in zip(rows, checked, strict=True)]
        out = await predict(("all", *chosen), rows)
        return {"predictions": out, "skipped": skipped}

    @app.get("/v1/tasks", summary="Each task's type, text fields and labels")
    async def list_tasks() -> dict[str, Any]:
        return {"tasks": tasks, "backend": getattr(predictor, "backend", settings.backend)}

    @app.get("/health", summary="The process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="The model is loaded and requests are being served")
    async def ready() -> Response:
        if batcher.running:
            return JSONResponse({"ready": True})
        return JSONResponse(
            {"ready": False}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)}
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(_Observe, metrics=metrics, retry_after=settings.retry_after_s)
    return app


def _validation_detail(errors: Any) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field": "inputs[0].sentence", "msg": ...}``, one per field, the most specific
    first: the tags of the union members an input was tried against (``str``, ``dict[...]``) are dropped and
    their errors merged."""
    out: dict[str, dict[str, str]] = {}
    for e in errors:
        parts: list[str] = []
        union = False
        for p in e.get("loc", ()):
            if p == "body":
                continue
            if isinstance(p, int):
                parts.append(f"[{p}]")
            elif isinstance(p, str) and (
                p in ("str", "list[str]") or p.startswith(("dict[", "list[", "union["))
            ):
                union = True
            else:
                parts.append(f".{p}" if parts else str(p))
        name = "".join(parts) or "body"
        msg = str(e.get("msg", "invalid"))
        if union:
            value = name.count("[") > 1 or "." in name.split("]", 1)[-1]  # a field's value inside an input
            msg = (
                "expected a string (or a list of strings: a token task's words, a multiple-choice task's choices)"
                if value
                else "expected a string, or an object of text fields"
            )
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.setdefault(name, {"field": name, "msg": msg, "type": str(e.get("type"))})
    # an input that failed as a string and as an object: report what failed inside the object
    specific = [
        d for n, d in out.items() if not any(m != n and m.startswith((n + ".", n + "[")) for m in out)
    ]
    return specific


class _BodyLimit:
    """ASGI middleware: read the request body (up to ``max_bytes``), answer 413 past it, replay it to the app."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class _Observe:
    """ASGI middleware: count requests by endpoint and status, time them, and add Retry-After to 503s."""

    def __init__(self, app: Any, metrics: Metrics, retry_after: int) -> None:
        self.app, self.metrics, self.retry_after = app, metrics, retry_after

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = self.metrics.endpoint(scope.get("path", ""))
        status = {"code": 500}
        started = time.perf_counter()

        async def observe(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if message["status"] == 503:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"retry-after"]
                    message = {
                        **message,
                        "headers": [*headers, (b"retry-after", str(self.retry_after).encode())],
                    }
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


async def _send_json(send: Callable, status: int, obj: dict) -> None:
    import json

    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------ the command


def serve_command(run_dir: Path, settings: ServeSettings, log: Callable[[str], None] = print) -> None:
    """Load the predictor (errors are the CLI's one-line errors), then run uvicorn until SIGINT / SIGTERM."""
    import socket

    import uvicorn

    from mtfuse.predict import check_source, load_predictor

    settings.check()
    check_source(run_dir)  # before binding the port
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bind before loading the model: a taken port is a one-line error, at once
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        raise MtfuseError(f"cannot serve on {settings.host}:{settings.port}: {e.strerror or e}") from None
    try:
        predictor = load_predictor(
            run_dir,
            settings.backend,
            settings.device,
            batch_size=max(settings.max_batch, 64),
            precision=settings.precision,
        )
        app = create_app(predictor, settings)
    except BaseException:
        sock.close()
        raise
    names = ", ".join(predictor.describe())
    host, port = sock.getsockname()[:2]
    log(f"serving {run_dir} ({settings.backend}; tasks: {names}) on http://{host}:{port} (docs: /docs)")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
    )
    uvicorn.Server(config).run(sockets=[sock])  # SIGINT / SIGTERM: in-flight requests finish, then exit
