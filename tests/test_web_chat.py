"""The web chat in a real headless Chromium, driven over the DevTools protocol (a websocket, no
extra browser driver): the page loads from `crawl2chat serve`, a message is typed and sent with real
key and mouse input, the streamed reply grows in the DOM token by token, the scripted model's tool
call shows boxed, the stop button stops the server's generation, errors show their message, and a
chat longer than a small model's context goes on with its oldest turns dropped and greyed out."""
from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from engine_fixtures import tiny_export, tiny_tokenizer_dir  # noqa: F401  (fixtures)
from serve_fixtures import ANSWER, CODE, CONTEXT, QUESTION, SCRIPT_TEXT, Server, scripted_export  # noqa: F401
from test_ui import chromium

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).parent / "artifacts"


class Page:
    """One Chromium tab over CDP: evaluate JavaScript, type, click."""

    def __init__(self, browser: str, profile, url: str):
        from websockets.sync.client import connect
        self.proc = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1200,900", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1) and time.time() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        [tab] = [t for t in targets if t["type"] == "page"]
        self.ws = connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:  # no domain is enabled, so the only messages are answers
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if value := self.js(expression):
                return value
            time.sleep(0.05)
        raise AssertionError(f"not true within {timeout} s: {expression}")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (not element.click()): it must be visible and enabled."""
        x, y = self.js(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
                       " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({selector!r}).focus()")
        self.call("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def set_control(self, selector: str, value) -> None:
        self.js(f"document.querySelector({selector!r}).value = {json.dumps(str(value))}")

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(scripted_export, tmp_path_factory):  # noqa: F811
    with Server(scripted_export, tmp_path_factory.mktemp("logs")) as s:
        yield s
        assert "Traceback" not in s.log_text()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    browser = chromium()
    p = Page(browser, tmp_path_factory.mktemp("chrome"), server.url)
    try:
        p.wait("document.getElementById('model')?.textContent === 'scripted'")
        yield p
    finally:
        p.close()


LAST_REPLY = "[...document.querySelectorAll('.msg.assistant')].at(-1)"
RECORD_LENGTHS = """
window.lengths = [];
new MutationObserver(() => { const a = %s; if (a) window.lengths.push(a.textContent.length); })
  .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
""" % LAST_REPLY


def test_message_streams_in_with_its_tool_call(page, server):
    assert page.js("document.title") == "crawl2chat"
    page.set_control("#temperature", 0)
    page.set_control("#max-tokens", 300)
    page.js(RECORD_LENGTHS)
    page.type("#input", QUESTION)
    page.click("#send")
    page.wait(f"{LAST_REPLY}?.dataset.state === 'done'")

    assert page.js("document.querySelector('.msg.user').textContent") == QUESTION
    assert page.js("document.getElementById('input').value") == ""
    lengths = page.js("window.lengths")
    growth = sorted(set(lengths))
    assert len(growth) >= 3 and lengths == sorted(lengths), lengths  # it grew in steps, never shrank
    call = page.js(f"{LAST_REPLY}.querySelector('.part.tool_call').textContent")
    output = page.js(f"{LAST_REPLY}.querySelector('.part.tool_output').textContent")
    assert call == f"tool call: python{CODE}" and output == "tool output42"
    texts = page.js(f"[...{LAST_REPLY}.querySelectorAll('.part.text')].map(e => e.textContent)")
    assert texts[0] == SCRIPT_TEXT and texts[1].startswith(ANSWER + "abab")
    assert "tokens/s" in page.js(f"{LAST_REPLY}.querySelector('.stats').textContent")
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "web_chat.png").write_bytes(shot)  # to look at; the DOM checks above are the test

    # the page keeps the reply as parts, the same the API returns for the same request
    history = page.js("conversation")
    api = requests.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 300, "temperature": 0, "top_k": 50})
    assert history == [{"role": "user", "content": QUESTION},
                       {"role": "assistant", "content": api.json()["choices"][0]["message"]["crawl2chat_parts"]}]


def test_stop_button_stops_the_generation(page, server):
    page.click("#new-chat")
    assert page.js("document.querySelectorAll('.msg').length") == 0 and page.js("conversation.length") == 0
    page.set_control("#max-tokens", CONTEXT - 64)  # ~15 s of generation if nothing stops it
    before = server.wait_idle()["tokens_generated"]
    page.type("#input", QUESTION)
    page.click("#send")
    page.wait(f"{LAST_REPLY}?.dataset.state === 'streaming' && {LAST_REPLY}.textContent.includes('abab')")
    assert page.js("document.getElementById('send').disabled") is True
    page.click("#stop")
    page.wait(f"{LAST_REPLY}.dataset.state === 'stopped'", timeout=5)
    after = server.wait_idle(timeout=5)
    assert after["in_progress"] == 0 and after["tokens_generated"] - before < 1500
    assert page.js("document.getElementById('stop').disabled") is True
    assert page.js("conversation.length") == 2  # the partial reply stays in the conversation

    page.set_control("#max-tokens", 5)  # the chat goes on after a stop
    page.type("#input", "thanks")
    page.press_enter()  # Enter sends too
    page.wait(f"document.querySelectorAll('.msg.assistant').length === 2 && {LAST_REPLY}.dataset.state === 'done'")
    assert page.js("conversation.length") == 4


def test_new_chat_mid_reply_stops_it_and_starts_clean(page, server):
    page.click("#new-chat")
    page.set_control("#max-tokens", CONTEXT - 64)
    page.type("#input", QUESTION)
    page.click("#send")
    page.wait(f"{LAST_REPLY}?.dataset.state === 'streaming'")
    page.click("#new-chat")
    assert server.wait_idle(timeout=5)["in_progress"] == 0
    time.sleep(0.3)  # the aborted reply's handler has run by now: it must not land in the new chat
    assert page.js("document.querySelectorAll('.msg').length") == 0 and page.js("conversation.length") == 0
    assert page.js("document.getElementById('send').disabled") is False


def test_a_rejected_request_shows_its_message(page):
    page.click("#new-chat")
    page.set_control("#temperature", 50)
    page.type("#input", "hello")
    page.click("#send")
    page.wait(f"{LAST_REPLY}?.dataset.state === 'error'")
    assert "temperature" in page.js(f"{LAST_REPLY}.querySelector('.error-text').textContent")
    assert page.js("document.getElementById('input').value") == "hello"  # to fix and resend
    assert page.js("conversation.length") == 0
    page.set_control("#temperature", 0.8)


def test_a_chat_past_the_context_drops_its_oldest_turns_and_goes_on(tiny_export, tmp_path_factory):  # noqa: F811
    """The tiny model's context is 256 tokens: without trimming the third turn was refused and the
    chat was over (issue 22). The page asks the server to drop the oldest turns (the CLI's rule),
    greys them out and says so; every reply comes."""
    with Server(tiny_export, tmp_path_factory.mktemp("logs")) as server:
        page = Page(chromium(), tmp_path_factory.mktemp("chrome"), server.url)
        try:
            page.wait("typeof modelName !== 'undefined' && modelName !== null")
            page.set_control("#temperature", 0)
            page.set_control("#max-tokens", 60)
            for i in range(5):
                page.type("#input", f"message {i}: " + "tell me more about it " * 8)
                page.click("#send")
                page.wait(f"document.querySelectorAll('.msg.assistant').length === {i + 1} && "
                          f"['done', 'error', 'stopped'].includes({LAST_REPLY}.dataset.state)")
                assert page.js(f"{LAST_REPLY}.dataset.state") == "done", page.js(f"{LAST_REPLY}.textContent")
            notes = page.js("[...document.querySelectorAll('.msg.note')].map(e => e.textContent)")
            assert notes and all("no longer fit the model's context" in n for n in notes)
            dropped = page.js("document.querySelectorAll('.msg.dropped').length")
            history = page.js("conversation")
            assert dropped >= 2 and len(history) == 10 - dropped   # the page forgot what the server left out
            assert history[0]["role"] == "user" and history[-2]["content"].startswith("message 4")
            assert page.js("document.querySelector('.msg.user').classList.contains('dropped')")
        finally:
            page.close()
        assert "Traceback" not in server.log_text()
