"""`crawl2chat serve`: a web chat page and an OpenAI-compatible API over one Engine.

    crawl2chat serve --model crawl2chat-chat@candidate          # then open http://127.0.0.1:8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], stream=True)

Routes: GET / (static/chat.html, no build step, nothing fetched from the internet), POST
/v1/chat/completions (JSON, or server-sent events with "stream": true), GET /v1/models, GET /health.

FastAPI (it comes with mlflow, on starlette + uvicorn, which dagster-webserver also uses): the
request is a pydantic model, so every malformed field gets a message naming it; errors use
OpenAI's shape {"error": {"message", "type", "param", "code"}} so clients raise their usual
exceptions. Bad input is always a 4xx: 400 invalid fields, 403 a cross-site browser request, 408 a
body that stalls, 413 too large, 415 not JSON, 429 too busy. Before any route, http_guard checks
the Host (DNS rebinding), the Origin and content type (other sites in the user's browser) and the
body size and pace, and adds the security headers. Every request has a time limit (--request-timeout,
waiting included): past it the reply ends with what came, finish_reason "length".

One generation runs at a time, in a worker thread (torch releases the GIL, the event loop keeps
serving). Up to --max-queue more requests wait their turn; beyond that 429. A client that
disconnects (the page's stop button aborts its fetch) sets the generation's stop_event, so the
engine stops within a token and the next request starts.

Tool calls run inside the engine. A reply's `content` shows them as Markdown fences (```python,
```output) so any client displays something readable; the exact parts (text / tool_call /
tool_output, as training/conversations/render.py defines them) travel in the extra field
`crawl2chat_parts` (streamed as pieces with an `index`), which standard clients ignore and the page
uses to draw tool calls boxed and to send the history back losslessly.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from training.engine.http_guard import Guard
from training.engine.openai_protocol import ApiError, Limits, Prepared, parse_request, prepare, validation_error
from training.engine.reply_parts import PartStream

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


# ---- one generation at a time ---------------------------------------------------------------

class Job:
    """One request's generation: events cross from the worker thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float):
        self.loop, self.events, self.stop = loop, asyncio.Queue(), threading.Event()
        # The request's time limit, waiting included: the engine stops within a token, the reply
        # ends with what came (finish_reason "length").
        self.timer = loop.call_later(timeout_s, self.stop.set)

    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            self.stop.set()

    async def batches(self):
        """Lists of TokenEvents as they come (all that arrived since the last await: one SSE chunk)."""
        try:
            while True:
                batch = [await self.events.get()]
                while not self.events.empty():
                    batch.append(self.events.get_nowait())
                items = [x for x in batch if x is not None and not isinstance(x, BaseException)]
                if items:
                    yield items
                for x in batch:
                    if isinstance(x, BaseException):
                        raise x
                if batch[-1] is None:
                    return
        finally:
            self.timer.cancel()


class Generations:
    def __init__(self, engine, max_queue: int, timeout_s: float):
        self.engine, self.max_queue, self.timeout_s = engine, max_queue, timeout_s
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self.lock = threading.Lock()
        self.jobs: set[Job] = set()  # running or waiting
        self.tokens_generated = 0    # since start (shown in /health: a stopped reply stops counting)

    def submit(self, prepared: Prepared) -> Job:
        with self.lock:
            if len(self.jobs) > self.max_queue:
                raise ApiError(429, f"busy: one reply is being generated and {len(self.jobs) - 1} wait(s); "
                               "retry in a moment", code="queue_full", type="rate_limit_error")
            job = Job(asyncio.get_running_loop(), self.timeout_s)
            self.jobs.add(job)
        self.worker.submit(self._run, job, prepared)
        return job

    def _run(self, job: Job, prepared: Prepared) -> None:
        try:
            if not job.stop.is_set():  # its client left while it waited
                for event in self.engine.stream(prepared.prompt, prepared.params, stop_event=job.stop):
                    job.put(event)
                    self.tokens_generated += 1
                    if job.stop.is_set():
                        break
        except BaseException as e:  # noqa: BLE001 - handed to the request, which reports it
            log.exception("generation failed")
            job.put(e)
        finally:
            with self.lock:
                self.jobs.discard(job)
            job.put(None)

    def stop_all(self) -> None:
        with self.lock:
            for job in self.jobs:
                job.stop.set()
        self.worker.shutdown(wait=False, cancel_futures=True)


# ---- the app --------------------------------------------------------------------------------

def create_app(engine, limits: Limits | None = None, hosts: set[str] | None = None) -> FastAPI:
    """hosts: the names the server answers to (Host header); default loopback's."""
    limits = limits or Limits()
    generations = Generations(engine, limits.max_queue, limits.request_timeout_s)
    created = int(time.time())

    async def lifespan(app):
        yield
        generations.stop_all()

    # No /docs: FastAPI's Swagger page loads its script from a CDN (/openapi.json stays).
    app = FastAPI(title="crawl2chat", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, hosts=hosts or {"127.0.0.1", "localhost"}, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), code=str(exc.status_code)).response()

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):  # a bug, not the client's fault: logged with its traceback
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error").response()

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "chat.html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_name, "context": engine.model.config.block_size,
                "in_progress": len(generations.jobs), "tokens_generated": generations.tokens_generated}

    def model_card() -> dict:
        return {"id": engine.model_name, "object": "model", "created": created, "owned_by": "crawl2chat"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != engine.model_name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {engine.model_name!r}",
                           "model", "model_not_found")
        return model_card()

    def read(raw: bytes):
        body = parse_request(raw, limits)
        return body, prepare(body, engine, limits)

    # The body is parsed here, not by FastAPI: its count of messages is checked before pydantic
    # builds them, and the JSON parse, validation and tokenizing run off the event loop.
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body, prepared = await asyncio.to_thread(read, await request.body())
        job = generations.submit(prepared)
        reply = Reply(engine, prepared, request_id=f"chatcmpl-{uuid.uuid4().hex}")
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(reply.sse(job, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        collect = asyncio.ensure_future(reply.collect(job))
        gone = asyncio.ensure_future(_disconnected(request.receive))
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not collect.done():  # the client left: stop generating for nobody
            job.stop.set()
            collect.cancel()
            return JSONResponse({}, status_code=499)
        return collect.result()

    return app


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Reply:
    """Turns one job's events into a chat.completion or a stream of chat.completion.chunk."""

    def __init__(self, engine, prepared: Prepared, request_id: str):
        self.engine, self.prepared, self.id = engine, prepared, request_id
        self.parts = PartStream(engine.tokenizer, prepared.stops)
        self.created, self.tokens, self.finish_reason = int(time.time()), 0, None
        self.started = time.perf_counter()
        self.first_token_s = None

    def _take(self, events, job: Job) -> tuple[list[dict], str]:
        pieces, md = [], []
        for ev in events:
            self.tokens += 1
            p, m = self.parts.feed(ev.token, ev.text, ev.forced)
            _merge(pieces, p)
            md.append(m)
            self.finish_reason = ev.finish_reason or self.finish_reason
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        if self.parts.stopped_by_string:  # the engine can stop too
            job.stop.set()
            self.finish_reason = "stop"
        return pieces, "".join(md)

    def usage(self) -> dict:
        n = len(self.prepared.prompt)
        return {"prompt_tokens": n, "completion_tokens": self.tokens, "total_tokens": n + self.tokens}

    def _log(self) -> None:
        elapsed = time.perf_counter() - self.started
        log.info("%s: %d prompt + %d generated tokens, first token %.0f ms, %.1f tokens/s, %s", self.id,
                 len(self.prepared.prompt), self.tokens, 1000 * (self.first_token_s or elapsed),
                 self.tokens / max(elapsed, 1e-9), self.finish_reason)

    async def collect(self, job: Job) -> dict:
        async for events in job.batches():
            self._take(events, job)
        self.parts.finish()
        self._log()
        message = {"role": "assistant", "content": self.parts.markdown(), "crawl2chat_parts": self.parts.parts}
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.engine.model_name, "usage": self.usage(),
                "crawl2chat_dropped_messages": self.prepared.dropped,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": self.finish_reason or "length"}]}

    def _chunk(self, delta: dict | None, finish_reason: str | None = None, **extra) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.engine.model_name, "choices": choices, **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n"

    async def sse(self, job: Job, include_usage: bool):
        try:
            # the first chunk says how many of the oldest messages were left out (crawl2chat_trim_history)
            yield self._chunk({"role": "assistant", "content": ""}, crawl2chat_dropped_messages=self.prepared.dropped)
            try:
                async for events in job.batches():
                    pieces, md = self._take(events, job)
                    if pieces or md:
                        yield self._chunk({"content": md, "crawl2chat_parts": pieces})
                pieces, md = self.parts.finish()  # held-back text, the fence of a call cut short
                if pieces or md:
                    yield self._chunk({"content": md, "crawl2chat_parts": pieces})
            except Exception as e:  # headers are out: report in the stream, the way OpenAI does
                err = ApiError(500, f"generation failed: {e}", type="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
                return
            self._log()
            yield self._chunk({}, self.finish_reason or "length")
            if include_usage:
                yield self._chunk(None, usage=self.usage())  # OpenAI's last chunk: no choices, the usage
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects mid-stream (the generator is closed)
            job.stop.set()


def _merge(pieces: list[dict], new: list[dict]) -> None:
    """Append pieces, joining one that continues the last piece's part (fewer, larger SSE pieces)."""
    for p in new:
        last = pieces[-1] if pieces else None
        field = "arguments" if p["type"] == "tool_call" else "text"
        if last and last["index"] == p["index"] and set(p) == {"index", "type", field}:
            last[field] += p[field]
        else:
            pieces.append(dict(p))


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    from training.engine.chat_cli import DEFAULT_MODEL, MODEL_HELP
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; any other prints a warning: there is no authentication)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-tools", action="store_true", help="no python or search tool")
    p.add_argument("--search-index", type=Path, default=None,
                   help="index.sqlite for the search tool (default: the newest under the lake's search/)")
    p.add_argument("--max-queue", type=int, default=Limits.max_queue,
                   help="requests that may wait while one generates; more get 429 (default %(default)s)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests for this host name (the Host header; repeatable). By default "
                        "only the bound address, localhost and 127.0.0.1: other names are refused (DNS rebinding)")
    p.add_argument("--request-timeout", type=float, default=Limits.request_timeout_s, metavar="SECONDS",
                   help="most time one request may take, waiting included; the reply ends there "
                        "(default %(default)g)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args) -> int:
    import uvicorn
    from pipelines.errors import ConfigError
    from training.engine.chat_cli import load_engine, resolve_search_index
    from training.engine.tools import default_tools, isolation_line

    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be >= 0 (requests that may wait), got {args.max_queue}")
    if not args.request_timeout > 0:
        raise ConfigError(f"--request-timeout must be > 0 seconds, got {args.request_timeout}")
    tools = {} if args.no_tools else default_tools(resolve_search_index(args.search_index))
    engine = load_engine(args.model, tools, args.device)  # the chat CLI's: the same names, the same errors
    limits = Limits(max_queue=args.max_queue, request_timeout_s=args.request_timeout)
    app = create_app(engine, limits, hosts={args.host, "localhost", "127.0.0.1", *args.allowed_host})
    if not _is_loopback(args.host):
        print(f"crawl2chat: warning: serving on {args.host}:{args.port} with no authentication: anyone who "
              "can reach it can use the model and its python tool. Put an authenticating proxy in front "
              "(and name the host it forwards with --allowed-host).", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"crawl2chat: serving {engine.model_name}: chat at http://{shown}:{args.port}/ , "
          f"OpenAI API at http://{shown}:{args.port}/v1", file=sys.stderr, flush=True)
    if line := isolation_line(tools):  # sandboxed, or why the python tool is disabled (issue 23)
        print(f"crawl2chat: {line}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(limits))
    return 0


def uvicorn_options(limits: Limits) -> dict:
    """How uvicorn runs the app: connections are bounded (past limit_concurrency a new request gets
    503), an idle keep-alive connection closes after 5 s, a request head is at most 16 KiB; the
    body's size and pace are http_guard's."""
    return dict(log_level="warning", timeout_graceful_shutdown=5, limit_concurrency=max(64, 4 * (limits.max_queue + 1)),
                timeout_keep_alive=5, h11_max_incomplete_event_size=16 << 10)
