"""`crawl2chat serve` against what a hostile web page, a careless client or an attacker sends (issue 23
point 4) and the chat surfaces of issue 22: a forged Host (DNS rebinding), a cross-site POST, sampling
values that break the arithmetic, a lone surrogate, a 200k-character stop string, bodies too large,
too many or stalled, a request past its time limit, history past the context, special tokens the
model writes out of place. The real server in a subprocess (the command line's defaults), and
in-process under a real uvicorn (serve_fixtures.serving) where a limit needs a smaller value."""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
import requests

from engine_fixtures import export_model, script_table, table_model, tiny_export, tiny_tok, tiny_tokenizer_dir  # noqa: F401
from serve_fixtures import CONTEXT, QUESTION, Server, scripted_export, serving  # noqa: F401
from training.conversations.render import render_for_completion

ASK = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):  # noqa: F811
    with Server(tiny_export, tmp_path_factory.mktemp("logs")) as s:
        yield s
        assert "Traceback" not in s.log_text()


def post(server, body, headers=None, **kw) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server.url}/v1/chat/completions", data=data, timeout=60,
                         headers={"Content-Type": "application/json", **(headers or {})}, **kw)


def raw_http(port: int, head: str, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send a request head (and part of a body), then read what the server says within `wait` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
        return out


# ---- who may call it ----------------------------------------------------------------------------

def test_a_forged_host_is_refused(server):
    """DNS rebinding: a page on attacker.example makes its name resolve to 127.0.0.1; the browser then
    sends Host: attacker.example. The loopback names still work."""
    port = server.port
    for path in ("/", "/health", "/v1/models"):
        r = requests.get(f"{server.url}{path}", headers={"Host": f"attacker.example:{port}"}, timeout=10)
        assert r.status_code == 400 and "not one this server answers to" in r.json()["error"]["message"]
    r = post(server, {"messages": ASK, "max_tokens": 2}, {"Host": "attacker.example",
                                                           "Origin": "http://attacker.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert requests.get(f"{server.url}/health", headers={"Host": host}, timeout=10).ok


def test_a_cross_site_post_is_refused_and_generates_nothing(server):
    before = server.wait_idle()["tokens_generated"]
    body = json.dumps({"messages": ASK, "max_tokens": 5}).encode()
    # what any page may send without a preflight: text/plain with its own Origin
    r = post(server, body, {"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_refused"
    r = post(server, body, {"Origin": "null"})   # a sandboxed frame or a file:// page
    assert r.status_code == 403
    r = post(server, body, {"Origin": "http://localhost:1"})   # another port is another origin
    assert r.status_code == 403
    # the server's own page (same origin) must still post JSON; forms and text/plain are refused
    same = {"Origin": server.url}
    assert post(server, body, {**same, "Content-Type": "text/plain"}).status_code == 415
    assert post(server, body, {**same, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert server.health()["tokens_generated"] == before
    assert post(server, body, {**same, "Content-Type": "application/json; charset=utf-8"}).ok


def test_the_page_has_security_headers_and_nothing_inline(server):
    page = requests.get(server.url, timeout=10)
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    # the CSP forbids inline scripts and handlers: the page must not need them
    assert not re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+=", page.text)
    for path in ("/static/chat.js", "/v1/models", "/nothing"):   # every response, errors included
        assert requests.get(f"{server.url}{path}", timeout=10).headers["X-Content-Type-Options"] == "nosniff"


# ---- values that broke the arithmetic or the tokenizer -------------------------------------------

def test_tiny_temperature_and_top_p_are_greedy_not_500(server):
    greedy = post(server, {"messages": ASK, "max_tokens": 8, "temperature": 0})
    assert greedy.ok
    text = greedy.json()["choices"][0]["message"]["content"]
    for extra in ({"temperature": 1e-39}, {"temperature": 5e-324}, {"top_p": 1e-300}, {"top_p": 1e-300, "seed": 3}):
        r = post(server, {"messages": ASK, "max_tokens": 8, **extra})
        assert r.status_code == 200, (extra, r.text[:300])
        assert r.json()["choices"][0]["message"]["content"] == text, extra   # the limit is the likeliest token
    assert post(server, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}').status_code == 400
    assert post(server, b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}').status_code == 400


@pytest.mark.parametrize("body, where", [
    (b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages[0].content[0].text"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages[0].content[0].text"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}', "stop[0]"),
], ids=["content", "text part", "stop"])
def test_a_lone_surrogate_is_a_400(server, body, where):
    r = post(server, body)
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["param"] == where and "lone surrogate" in error["message"]
    # a pair is a character, and raw bytes that are not UTF-8 are refused as such
    assert post(server, b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 2}').ok
    bad = post(server, b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}')
    assert bad.status_code == 400 and "not UTF-8" in bad.json()["error"]["message"]


def test_a_200k_character_stop_string_is_refused_while_health_answers(server):
    """It froze the server (a quadratic scan per token on the event loop). /health is asked while the
    request is in flight, with a bound far above its usual milliseconds: a frozen loop misses it."""
    result = {}
    ask = threading.Thread(target=lambda: result.update(r=post(server, {
        "messages": ASK, "max_tokens": 30, "stop": ["ab" * 100_000]})))
    ask.start()
    time.sleep(0.5)
    health = requests.get(f"{server.url}/health", timeout=5)
    ask.join(120)
    assert health.ok
    r = result["r"]
    assert r.status_code == 400 and "stop[0]: 200000 characters; the limit is 256" in r.json()["error"]["message"]
    ok = post(server, {"messages": ASK, "max_tokens": 30, "stop": ["q" * 256, "z"]})  # at the limit: served
    assert ok.ok


# ---- bodies ------------------------------------------------------------------------------------

def test_an_oversized_body_is_refused_before_parsing(server):
    # 239k tiny messages, the 8 MB body that cost 3.5 s of parsing: refused by its size alone
    body = json.dumps({"messages": [{"role": "user", "content": "x"}] * 239_000}).encode()
    r = post(server, body)
    assert r.status_code == 413 and "exceeds 2097152 bytes" in r.json()["error"]["message"]
    # a head claiming 1 GB is answered at once: the server reads none of the body
    answer = raw_http(server.port, f"POST /v1/chat/completions HTTP/1.1\nHost: 127.0.0.1\n"
                                   f"Content-Type: application/json\nContent-Length: {1 << 30}\n")
    assert answer.startswith(b"HTTP/1.1 413")
    # a chunked body (no length announced) is cut where it passes the limit
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    answer = raw_http(server.port, "POST /v1/chat/completions HTTP/1.1\nHost: 127.0.0.1\n"
                                   "Content-Type: application/json\nTransfer-Encoding: chunked\n", chunk * 33)
    assert answer.startswith(b"HTTP/1.1 413")
    # under the size limit, too many messages are counted before pydantic builds them
    r = post(server, {"messages": [{"role": "user", "content": "x"}] * 55_000})
    assert r.status_code == 413 and "55000 messages; the limit is 512" in r.json()["error"]["message"]
    r = post(server, b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def scripted_engine(scripted_export):  # noqa: F811
    from training.engine.engine import Engine
    return Engine.load(scripted_export, device="cpu")


def test_a_stalled_body_gets_408_and_its_connection_closes(scripted_engine):
    from training.engine.openai_protocol import Limits
    from training.engine.server import create_app
    with serving(create_app(scripted_engine, Limits(body_timeout_s=1))) as url:
        port = int(url.rsplit(":", 1)[1])
        t = time.time()
        answer = raw_http(port, "POST /v1/chat/completions HTTP/1.1\nHost: 127.0.0.1\n"
                                "Content-Type: application/json\nContent-Length: 1000000\n",
                          b'{"messages": [' + b" " * 100_000, wait=20)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
        assert time.time() - t < 15   # answered and closed (recv saw the end), not left hanging
        assert requests.get(f"{url}/health", timeout=5).ok


def test_a_request_ends_at_its_time_limit(scripted_engine):
    from training.engine.openai_protocol import Limits
    from training.engine.server import create_app
    with serving(create_app(scripted_engine, Limits(request_timeout_s=2))) as url:
        t = time.time()
        r = requests.post(f"{url}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": QUESTION}], "max_tokens": CONTEXT - 64})
        took = time.time() - t
        assert r.ok and r.json()["choices"][0]["finish_reason"] == "length"
        assert r.json()["usage"]["completion_tokens"] < CONTEXT - 64 and took < 30   # cut, not the ~4000 asked
        assert requests.get(f"{url}/health", timeout=5).json()["in_progress"] == 0


# ---- chat surfaces (issue 22) -------------------------------------------------------------------

def _long_chat(turns: int) -> list[dict]:
    chat = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        chat += [{"role": "user", "content": f"question {i} " + "word " * 25},
                 {"role": "assistant", "content": "answer " * 15}]
    return chat + [{"role": "user", "content": "and the last one?"}]


def test_history_past_the_context_is_trimmed_on_request_or_refused(server, tiny_tok):  # noqa: F811
    from training.engine.chat_cli import MIN_REPLY_TOKENS, fit_history
    chat = _long_chat(6)
    assert len(render_for_completion(tiny_tok, chat)) > 256   # the tiny model's context
    r = post(server, {"messages": chat, "max_tokens": 100})
    assert r.status_code == 400 and "crawl2chat_trim_history" in r.json()["error"]["message"]

    r = post(server, {"messages": chat, "max_tokens": 100, "crawl2chat_trim_history": True})
    assert r.ok, r.text[:300]
    kept = list(chat)
    prompt, turns = fit_history(tiny_tok, kept, 256, MIN_REPLY_TOKENS)   # the CLI's rule
    reply = r.json()
    assert turns >= 1 and kept[0] == chat[0] and kept[-1] == chat[-1]   # system prompt and newest message kept
    assert reply["crawl2chat_dropped_messages"] == len(chat) - len(kept)
    assert reply["usage"]["prompt_tokens"] == len(prompt) and len(prompt) + MIN_REPLY_TOKENS <= 256
    # streamed: the first chunk says it
    r = post(server, {"messages": chat, "max_tokens": 100, "stream": True, "crawl2chat_trim_history": True},
             stream=True)
    first = json.loads(next(line for line in r.iter_lines() if line.startswith(b"data: "))[6:])
    assert first["crawl2chat_dropped_messages"] == len(chat) - len(kept)
    # a newest message that alone does not fit is still refused, saying so
    r = post(server, {"messages": [{"role": "user", "content": " word" * 400}], "crawl2chat_trim_history": True})
    assert r.status_code == 400 and "newest message alone does not fit" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def stray_specials_engine(tiny_tok, tiny_tokenizer_dir, tmp_path_factory):  # noqa: F811
    """Greedy after a chat prompt: "Hi", a <|tool_end|> with no call open, " there", an <|output_end|>
    and an <|im_start|> the engine never forced, " ok", then the end of the turn."""
    from training.engine.engine import Engine
    sp, enc = tiny_tok.special, tiny_tok.encode
    script = [sp("im_sep"), *enc("Hi"), sp("tool_end"), *enc(" there"), sp("output_end"), sp("im_start"),
              *enc(" ok"), sp("im_end")]
    out = export_model(table_model(tiny_tok, script_table(script)), tmp_path_factory.mktemp("stray") / "x",
                       tiny_tokenizer_dir)
    return Engine.load(out, tools={}, device="cpu")


def test_special_tokens_never_show_as_text(stray_specials_engine, tiny_tok):  # noqa: F811
    from training.engine.server import create_app
    specials = re.compile(r"<\|[a-z_]+\|>")
    with serving(create_app(stray_specials_engine)) as url:
        body = {"messages": ASK, "temperature": 0, "max_tokens": 30}
        r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        message = r["choices"][0]["message"]
        assert message["content"] == "Hi there ok" and r["choices"][0]["finish_reason"] == "stop"
        assert message["crawl2chat_parts"] == [{"type": "text", "text": "Hi there ok"}]
        stream = requests.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60).text
        chunks = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hi there ok"
        assert not specials.search(stream)
