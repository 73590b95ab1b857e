"""`crawl2chat serve` as a real subprocess, and a scripted model that calls a tool.

    from engine_fixtures import tiny_tokenizer_dir, tiny_export  # noqa: F401  (fixtures)
    from serve_fixtures import QUESTION, Server, scripted_export  # noqa: F401

    with Server(model_dir, tmp_path) as server:
        requests.get(f"{server.url}/health")
    with serving(create_app(engine, Limits(body_timeout_s=1))) as url:   # in this process, other limits
        ...

`scripted_export` is an export of a real 1-layer GPT that, asked QUESTION as the first user
message, writes SCRIPT_TEXT, calls the python tool (`print(6*7)`), reads its forced output, writes
ANSWER and then "ab" over and over until max_tokens: the tool call, the streaming and the stop
button can all be checked against known text. It does so with no hook in the engine or the server:
the next token is a function of the position (a one-hot position feature over the reply's
positions) and, past the script, of the current token (a -> b, b -> a), the way
engine_fixtures.table_model maps tokens. The context is long (4096) so a reply can run for seconds.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import torch

from engine_fixtures import export_model
from pipelines.tokenizer import load_tokenizer
from training.model import GPT, preset

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is 6 times 7?"
SCRIPT_TEXT = "Let me compute that with python."
CODE = "print(6*7)"
ANSWER = "The answer is 42."
CONTEXT = 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m pipelines.cli serve --model DIR` on a free loopback port, up until the with-block ends."""

    def __init__(self, model_dir: Path, log_dir: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{self.port}.log"
        self.cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(model_dir),
                    "--port", str(self.port), "--device", "cpu", *extra]

    def __enter__(self) -> "Server":
        self.log = open(self.log_path, "w")
        # one intra-op thread: on a shared 2-core box more threads spin against the other load
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"crawl2chat serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.__exit__()
        pytest.fail(f"crawl2chat serve did not answer /health within 120 s:\n{self.log_text()}")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def wait_idle(self, timeout: float = 10.0) -> dict:
        deadline = time.time() + timeout
        while (h := self.health())["in_progress"] and time.time() < deadline:
            time.sleep(0.05)
        return h


@contextmanager
def serving(app):
    """The app under a real uvicorn server on a free loopback port, in a thread of this process, with
    the options `crawl2chat serve` runs it with: for limits the command line does not set."""
    import uvicorn

    from training.engine.openai_protocol import Limits
    from training.engine.server import uvicorn_options
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_options(Limits())))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def scripted_reply(tok) -> tuple[list[int], list[int]]:
    """(reply tokens the scripted model writes after QUESTION, the two tokens it then alternates)."""
    from training.engine.python_tool import python_tool
    sp = tok.special
    output = python_tool(CODE)  # what the server's engine will force: the same sandbox, the same code
    reply = (tok.encode(SCRIPT_TEXT) + [sp("tool_start"), *tok.encode("python"), sp("im_sep"), *tok.encode(CODE),
             sp("tool_end"), sp("output_start"), *tok.encode(output), sp("output_end")] + tok.encode(ANSWER))
    return reply, [tok.encode("a")[0], tok.encode("b")[0]]


def scripted_gpt(tok, prompt_len: int, reply: list[int], loop: list[int], scale: float = 50.0) -> GPT:
    """The model the module doc describes. Residual = one-hot token (first V dims) + one-hot reply
    position (the next S dims, zero elsewhere); blocks add nothing (zero output projections). After
    the final LayerNorm a lone one-hot is ~sqrt(d)·e and a pair ~sqrt(d/2)·(e1 + e2), so the head
    weights below give the script's token ~1.41·scale at a reply position (the loop's ~0.71·scale
    loses there) and the loop's successor ~scale past the script."""
    V, S = tok.vocab_size, len(reply)
    d = V + S
    cfg = preset("tiny", n_layer=1, n_embd=d, n_head=1, block_size=CONTEXT, vocab_size=V,
                 rope=False, tie_embeddings=False)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.wte.weight[:V, :V] = torch.eye(V)  # rows past V: the padded vocabulary, never looked up
        for norm in (model.h[0].ln_1, model.h[0].ln_2, model.ln_f):
            norm.weight.fill_(1.0)
        w = scale / d ** 0.5
        for k, token in enumerate(reply):  # position prompt_len-1+k predicts reply[k]
            model.wpe.weight[prompt_len - 1 + k, V + k] = 1.0
            model.lm_head.weight[token, V + k] = 2 * w
        a, b = loop
        model.lm_head.weight[b, a] = w
        model.lm_head.weight[a, b] = w
        model.lm_head.weight[a, reply[-1]] = w  # the script's last token leads into the loop
    return model.eval()


@pytest.fixture(scope="session")
def scripted_export(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    from training.conversations.render import render_for_completion
    tok = load_tokenizer(tiny_tokenizer_dir)
    prompt = render_for_completion(tok, [{"role": "user", "content": QUESTION}])
    reply, loop = scripted_reply(tok)
    model = scripted_gpt(tok, len(prompt), reply, loop)
    return export_model(model, tmp_path_factory.mktemp("scripted") / "scripted", tiny_tokenizer_dir)
