"""`crawl2chat serve` for real: a subprocess on a loopback port, driven by the official `openai` client
(non-streaming, streaming, models) and by raw HTTP for what a client should never send: every bad
request gets a 4xx in OpenAI's error shape, never a 500. A scripted model (serve_fixtures) calls the
python tool, so tool calls in `content` and `crawl2chat_parts`, stop strings, the queue limit and
stopping on disconnect are checked against known text."""
from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests

from engine_fixtures import tiny_export, tiny_tok, tiny_tokenizer_dir  # noqa: F401  (fixtures)
from serve_fixtures import ANSWER, CODE, CONTEXT, QUESTION, SCRIPT_TEXT, Server, scripted_export  # noqa: F401
from training.conversations.render import parse_assistant, render_for_completion

ASK = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def tiny_server(tiny_export, tmp_path_factory):  # noqa: F811
    with Server(tiny_export, tmp_path_factory.mktemp("logs")) as server:
        yield server
        assert "Traceback" not in server.log_text()  # no request anywhere in this module crashed it


@pytest.fixture(scope="module")
def scripted_server(scripted_export, tmp_path_factory):  # noqa: F811
    with Server(scripted_export, tmp_path_factory.mktemp("logs"), "--max-queue", "0") as server:
        yield server
        assert "Traceback" not in server.log_text()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def stream_text(server, **kw) -> tuple[str, list, str, dict]:
    """(content, parts rebuilt from the pieces, finish_reason, usage) of a streamed completion."""
    chunks = list(client(server).chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    content, parts, finish = "", [], None
    for c in chunks[:-1]:
        delta = c.choices[0].delta
        content += delta.content or ""
        for piece in (delta.model_extra or {}).get("crawl2chat_parts") or []:
            piece = dict(piece)
            index = piece.pop("index")
            if index == len(parts):
                parts.append(piece)
            else:
                field = "arguments" if piece["type"] == "tool_call" else "text"
                parts[index][field] += piece[field]
        finish = c.choices[0].finish_reason or finish
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # include_usage: the last chunk
    return content, parts, finish, chunks[-1].usage


# ---- the openai client against the tiny random model -------------------------------------------

def test_openai_client_completion_streaming_and_models(tiny_server, tiny_tok):  # noqa: F811
    c = client(tiny_server)
    [model] = c.models.list().data
    assert model.id == tiny_server.health()["model"] and c.models.retrieve(model.id).id == model.id

    r = c.chat.completions.create(model=model.id, messages=ASK, max_tokens=12, temperature=0.8, seed=7)
    assert r.object == "chat.completion" and r.model == model.id
    [choice] = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"  # the random model never ends a turn by itself
    prompt = len(render_for_completion(tiny_tok, ASK))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (prompt, 12, prompt + 12)
    again = c.chat.completions.create(model=model.id, messages=ASK, max_tokens=12, temperature=0.8, seed=7)
    other = c.chat.completions.create(model=model.id, messages=ASK, max_tokens=12, temperature=0.8, seed=8)
    assert again.choices[0].message.content == choice.message.content  # same seed, same text
    assert other.choices[0].message.content != choice.message.content

    content, parts, finish, usage = stream_text(tiny_server, model=model.id, messages=ASK, max_tokens=12,
                                                temperature=0.8, seed=7)
    assert content == choice.message.content and finish == "length"  # streamed = the same reply
    assert parts == choice.message.model_extra["crawl2chat_parts"]
    assert usage.completion_tokens == 12


def test_reply_is_cut_to_the_context(tiny_server):
    """max_tokens within the context but past what the prompt leaves: what fits, finish 'length'."""
    r = client(tiny_server).chat.completions.create(model="x", messages=ASK, max_tokens=256, seed=1)
    assert r.usage.total_tokens == 256 and r.choices[0].finish_reason == "length"


def _post(server, body=None, raw: bytes | None = None, **kw) -> requests.Response:
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{server.url}/v1/chat/completions", data=data,
                         headers={"Content-Type": "application/json"}, timeout=60, **kw)


BAD_REQUESTS = {
    # name: (body, expected status, words the message must contain)
    "malformed JSON": (b'{"messages": [', 400, "not valid JSON"),
    "not an object": ([1, 2], 400, "body"),
    "missing messages": ({"model": "x"}, 400, "messages: Field required"),
    "empty messages": ({"messages": []}, 400, "messages"),
    "messages not a list": ({"messages": "hi"}, 400, "messages"),
    "10k messages": ({"messages": [{"role": "user", "content": "hi"}] * 10_000}, 413, "10000 messages"),
    "1 MB message": ({"messages": [{"role": "user", "content": "x" * (1 << 20)}]}, 413,
                     "messages[0].content: 1048576 characters"),
    "9 MB body": ({"messages": [{"role": "user", "content": "x" * 90_000}] * 100}, 413, "exceeds"),
    "temperature 50": ({"messages": ASK, "temperature": 50}, 400, "temperature"),
    "temperature a string": ({"messages": ASK, "temperature": "hot"}, 400, "temperature"),
    "top_k -1": ({"messages": ASK, "top_k": -1}, 400, "top_k"),
    "top_p 0": ({"messages": ASK, "top_p": 0}, 400, "top_p"),
    "max_tokens 10^9": ({"messages": ASK, "max_tokens": 10**9}, 400, "max_tokens: at most 256"),
    "max_tokens 0": ({"messages": ASK, "max_tokens": 0}, 400, "max_tokens"),
    "negative seed": ({"messages": ASK, "seed": -1}, 400, "seed"),
    "n 3": ({"messages": ASK, "n": 3}, 400, "n: only n=1"),
    "five stop strings": ({"messages": ASK, "stop": list("abcde")}, 400, "stop"),
    "client tools": ({"messages": ASK, "tools": [{"type": "function"}]}, 400, "tools"),
    "wrong role": ({"messages": [{"role": "tool", "content": "hi"}]}, 400, "messages[0].role"),
    "missing role": ({"messages": [{"content": "hi"}]}, 400, "messages[0].role"),
    "content a number": ({"messages": [{"role": "user", "content": 42}]}, 400, "messages[0].content"),
    "content null": ({"messages": [{"role": "user", "content": None}]}, 400, "messages[0].content"),
    "image part": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
                   "messages[0].content[0]"),
    "text part without text": ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400,
                               "messages[0].content[0].text"),
    "tool call in a user message": ({"messages": [{"role": "user", "content": [
        {"type": "tool_call", "name": "python", "arguments": "1"}]}]}, 400, "messages[0].content[0].type"),
    "ends with the assistant": ({"messages": ASK + [{"role": "assistant", "content": "hi"}]}, 400, "messages[1].role"),
    "system not first": ({"messages": ASK + [{"role": "system", "content": "be brief"}, *ASK]}, 400,
                         "messages[1].role"),
    "longer than the context": ({"messages": [{"role": "user", "content": " word" * 400}]}, 400,
                                "context is 256"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_with_a_message(tiny_server, name, stream):
    body, status, words = BAD_REQUESTS[name]
    if isinstance(body, dict) and stream:
        body = dict(body, stream=True)  # checked before the stream starts: a real status, not an SSE error
    r = _post(tiny_server, raw=body) if isinstance(body, bytes) else _post(tiny_server, body)
    assert r.status_code == status, r.text[:500]
    error = r.json()["error"]
    assert words in error["message"], error
    assert set(error) == {"message", "type", "param", "code"} and error["type"]


def test_the_openai_client_raises_its_own_exceptions(tiny_server):
    c = client(tiny_server)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.chat.completions.create(model="x", messages=ASK, temperature=50)
    with pytest.raises(openai.BadRequestError, match="top_k"):
        c.chat.completions.create(model="x", messages=ASK, extra_body={"top_k": -1}, stream=True)
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


def test_other_routes_and_methods_answer_in_the_error_shape(tiny_server):
    r = requests.get(f"{tiny_server.url}/v1/nothing-here", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = requests.get(f"{tiny_server.url}/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["message"]
    page = requests.get(tiny_server.url, timeout=10)
    assert page.ok and "<title>crawl2chat</title>" in page.text
    assert requests.get(f"{tiny_server.url}/static/chat.js", timeout=10).ok


# ---- the scripted model: tool calls, stop strings, the queue, disconnects -----------------------

def test_tool_call_shows_in_content_and_parts(scripted_server, tiny_tok):  # noqa: F811
    c = client(scripted_server)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTION}], max_tokens=60)
    message = r.choices[0].message
    text, call, output, after = message.model_extra["crawl2chat_parts"]
    assert (text, call, output) == ({"type": "text", "text": SCRIPT_TEXT},
                                    {"type": "tool_call", "name": "python", "arguments": CODE},
                                    {"type": "tool_output", "text": "42"})
    assert after["type"] == "text" and after["text"].startswith(ANSWER + "abab")
    assert message.content.startswith(f"{SCRIPT_TEXT}\n\n```python\n{CODE}\n```\n```output\n42\n```\n\n{ANSWER}ab")
    content, parts, finish, usage = stream_text(scripted_server, model="x", max_tokens=60,
                                                messages=[{"role": "user", "content": QUESTION}])
    assert (content, parts, finish) == (message.content, message.model_extra["crawl2chat_parts"], "length")
    assert usage.completion_tokens == r.usage.completion_tokens == 60

    # the parts go back as the assistant's content, exactly as the model wrote them
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": parts},
               {"role": "user", "content": "thanks"}]
    r = _post(scripted_server, {"messages": history, "max_tokens": 3})
    assert r.ok, r.text
    ours = render_for_completion(tiny_tok, history)
    assert r.json()["usage"]["prompt_tokens"] == len(ours)


def test_stop_strings_end_the_reply(scripted_server):
    ask = [{"role": "user", "content": QUESTION}]
    r = client(scripted_server).chat.completions.create(model="x", messages=ask, max_tokens=200, stop=[" is 4"])
    parts = r.choices[0].message.model_extra["crawl2chat_parts"]
    assert parts[-1] == {"type": "text", "text": "The answer"} and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 60  # the engine stopped too, not just the text
    content, s_parts, finish, _ = stream_text(scripted_server, model="x", messages=ask, max_tokens=200,
                                              stop=[" is 4"])
    assert (content, s_parts, finish) == (r.choices[0].message.content, parts, "stop")
    # a stop string that only appears inside the tool output does not stop the reply
    r = client(scripted_server).chat.completions.create(model="x", messages=ask, max_tokens=40, stop="print")
    assert r.choices[0].finish_reason == "length"


def _long_stream(server):
    """A streaming request that would run for many seconds; returns once its first token came."""
    r = requests.post(f"{server.url}/v1/chat/completions", stream=True, timeout=60,
                      json={"messages": [{"role": "user", "content": QUESTION}], "stream": True,
                            "max_tokens": CONTEXT - 64})
    assert r.ok
    r.lines = r.iter_lines()  # kept: a dropped line iterator would close the connection with it
    assert next(line for line in r.lines if line.startswith(b"data: ") and b"crawl2chat_parts" in line)
    return r


def test_disconnect_stops_the_generation(scripted_server):
    before = scripted_server.wait_idle()["tokens_generated"]
    r = _long_stream(scripted_server)
    r.close()  # the client goes away: the server must stop generating for nobody
    t = time.time()
    after = scripted_server.wait_idle(timeout=10)
    assert after["in_progress"] == 0, f"still generating {time.time() - t:.1f} s after the client left"
    assert after["tokens_generated"] - before < 1000  # of the ~4000 asked

    before = after["tokens_generated"]  # the same for a non-streaming request whose client gives up
    with pytest.raises(requests.Timeout):
        requests.post(f"{scripted_server.url}/v1/chat/completions", timeout=1,
                      json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": CONTEXT - 64})
    after = scripted_server.wait_idle(timeout=10)
    assert after["in_progress"] == 0 and after["tokens_generated"] - before < 2000


def test_queue_full_gets_429_then_serves_again(scripted_server):
    scripted_server.wait_idle()
    long = _long_stream(scripted_server)  # --max-queue 0: nobody may wait behind it
    try:
        with pytest.raises(openai.RateLimitError, match="busy"):
            client(scripted_server).chat.completions.create(model="x", messages=ASK, max_tokens=2)
        r = _post(scripted_server, {"messages": ASK, "max_tokens": 2, "stream": True})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        health = requests.get(f"{scripted_server.url}/health", timeout=5)  # health still answers
        assert health.ok and health.json()["in_progress"] == 1
    finally:
        long.close()
    scripted_server.wait_idle()
    assert client(scripted_server).chat.completions.create(model="x", messages=ASK, max_tokens=2).choices


def test_concurrent_requests_queue_and_all_finish(tiny_server):
    """Within the queue limit (default 8) requests wait their turn; each gets its own seeded reply."""
    results, threads = {}, []
    for seed in range(4):
        def ask(seed=seed):
            results[seed] = client(tiny_server).chat.completions.create(
                model="x", messages=ASK, max_tokens=30, seed=seed).choices[0].message.content
        threads.append(threading.Thread(target=ask))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    alone = client(tiny_server).chat.completions.create(model="x", messages=ASK, max_tokens=30, seed=2)
    assert len(results) == 4 and results[2] == alone.choices[0].message.content


# ---- in process: the streamed parts are what parse_assistant makes of the tokens -----------------

def test_part_stream_matches_parse_assistant(scripted_export, tiny_tok):  # noqa: F811
    from training.engine.engine import Engine, SamplingParams
    from training.engine.reply_parts import PartStream
    engine = Engine.load(scripted_export, device="cpu")
    prompt = render_for_completion(tiny_tok, [{"role": "user", "content": QUESTION}])
    for max_tokens in (8, 14, 17, 19, 40):  # cut inside the text, the call, the output, after
        params = SamplingParams(max_tokens=max_tokens, temperature=0)
        stream, md = PartStream(tiny_tok), ""
        tokens, sampled = [], []
        for ev in engine.stream(prompt, params):
            md += stream.feed(ev.token, ev.text, ev.forced)[1]
            tokens.append(ev.token)
            sampled.append(not ev.forced)
        md += stream.finish()[1]
        assert stream.parts == parse_assistant(tiny_tok, tokens, sampled)
        assert md == stream.markdown()  # the streamed content adds up to the non-streamed one


def test_stop_strings_are_held_back_until_they_cannot_match(tiny_tok):  # noqa: F811
    from training.engine.reply_parts import PartStream
    s = PartStream(tiny_tok, stops=["XYZ"])
    out = [s.feed(1, t, False)[1] for t in ("abX", "Y", "Q", "XY", "Zrest")]
    assert out == ["ab", "", "XYQ", "", ""] and s.stopped_by_string
    assert s.parts == [{"type": "text", "text": "abXYQ"}]


# ---- the command line ---------------------------------------------------------------------------

def test_cli_binds_loopback_and_warns_for_any_other_host(tiny_export, monkeypatch, capsys):  # noqa: F811
    """main() up to the bind: uvicorn.run is replaced so that no test listens on every interface."""
    import uvicorn

    from pipelines.cli import main
    bound = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: bound.append((host, port)))
    assert main(["serve", "--model", str(tiny_export), "--port", "8123"]) == 0
    assert bound[-1] == ("127.0.0.1", 8123) and "warning" not in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_export), "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert bound[-1] == ("0.0.0.0", 8000) and "warning: serving on 0.0.0.0:8000 with no authentication" in err


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    from pipelines.cli import main
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crawl2chat: error:") and "nope" in err and err.count("\n") == 1
    assert main(["serve", "--model", str(tmp_path), "--max-queue", "-1"]) == 2
    assert "--max-queue" in capsys.readouterr().err
