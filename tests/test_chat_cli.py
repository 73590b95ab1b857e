"""`crawl2chat chat` in a subprocess with stdin lines (the way a script uses it), on tiny exported
models: a random GPT, and a "table model" whose greedy reply is a fixed sentence."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_fixtures import export_model, script_table, table_model, tiny_export, tiny_tok, tiny_tokenizer_dir  # noqa: F401
from training.engine.chat_cli import BEST, Display, fit_history, resolve_search_index, stream_reply

CLI = [str(Path(sys.executable).parent / "crawl2chat"), "chat"]
ANSWER = "The answer is 42."


@pytest.fixture(scope="module")
def answer_export(tiny_tok, tiny_tokenizer_dir, tmp_path_factory):
    """Greedy decoding after <|im_sep|> (the end of every chat prompt) writes ANSWER, then <|im_end|>."""
    script = [tiny_tok.special("im_sep"), *tiny_tok.encode(ANSWER), tiny_tok.special("im_end")]
    return export_model(table_model(tiny_tok, script_table(script)),
                        tmp_path_factory.mktemp("answer") / "export", tiny_tokenizer_dir)


def chat(args, stdin: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_reply_streams_before_the_next_message_is_read(answer_export):
    proc = subprocess.Popen([*CLI, "--model", str(answer_export), "--temperature", "0", "--no-tools"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        proc.stdin.write("What is 6*7?\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == ANSWER + "\n"   # while stdin is still open: nothing waits for EOF
        assert proc.poll() is None
        out, err = proc.communicate("/nonsense\nand again?\n/quit\nnever read\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == ANSWER + "\n"
    assert "unknown command /nonsense" in err


def test_tiny_temperature_and_top_p_sample_the_likeliest_token(answer_export):
    """1e-39 overflowed the logits to NaN (a traceback); the limit of temperature -> 0 is greedy."""
    done = chat(["--model", answer_export, "--temperature", "1e-39", "--top-p", "1e-300", "--no-tools"], "6*7?\n")
    assert done.returncode == 0 and done.stdout == ANSWER + "\n", done.stderr


def test_reset_forgets_the_conversation(tiny_export):
    # A random model's sampled reply depends on the whole prompt; the seed is the same every turn.
    args = ["--model", tiny_export, "--max-tokens", "12", "--no-tools"]
    first = chat(args, "Hi there\n")
    assert first.returncode == 0 and len(first.stdout) > 1, first.stderr
    # turn 2 sees turn 1 in its prompt and says something else; after /reset it is turn 1 again
    done = chat(args, "Hi there\nHi there\n/reset\nHi there\n")
    assert done.stdout.startswith(first.stdout) and done.stdout.endswith(first.stdout)
    assert done.stdout[len(first.stdout):-len(first.stdout)] not in ("", first.stdout)
    assert "conversation reset" in done.stderr


def test_base_mode_continues_the_document(tiny_export, tiny_tok):
    from training.engine.engine import Engine, SamplingParams
    line = "The history of the city begins"
    done = chat(["--model", tiny_export, "--base", "--max-tokens", "10", "--temperature", "0"], line + "\n")
    assert done.returncode == 0, done.stderr
    assert "document completer" in done.stderr and "does not answer" in done.stderr
    # what it printed is the line, then the model's continuation of <|endoftext|> + the line
    [c] = Engine.load(tiny_export, tools={}).generate([[tiny_tok.bos_id, *tiny_tok.encode(line)]],
                                                      SamplingParams(max_tokens=10, temperature=0))
    assert done.stdout == line + c.text.replace("<|endoftext|>", "") + "\n"


def test_missing_model_is_one_error_line_and_exit_2(tmp_path):
    done = chat(["--model", tmp_path / "no-such-export"], "Hi\n")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("crawl2chat: error: ") and "no-such-export" in line


def test_missing_registry_says_run_make_demo(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path / "dagster_home"), "MLFLOW_TRACKING_URI": ""}
    done = chat([], "Hi\n", cwd=tmp_path, env=env)   # default model crawl2chat-base@candidate
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "no MLflow registry" in line and "make demo" in line
    assert not (tmp_path / "dagster_home").exists()   # looking did not create an empty registry


def test_search_index_flag_and_default(tmp_path, monkeypatch):
    from pipelines.document import Document
    from pipelines.errors import InputError
    from training.engine.search import build_index, index_path
    with pytest.raises(InputError, match="no search index"):
        resolve_search_index(tmp_path / "missing.sqlite")
    monkeypatch.setenv("CRAWL2CHAT_LAKE", str(tmp_path / "lake"))
    assert resolve_search_index(None) is None   # no index: chat runs with the python tool only
    built = index_path(tmp_path / "lake", "CC-MAIN-2099-01")
    build_index([Document("Some text about parsers.", "d1", {"url": "https://x.example/"})], built)
    assert resolve_search_index(None) == built
    done = chat(["--model", tmp_path, "--search-index", tmp_path / "missing.sqlite"], "Hi\n")
    assert done.returncode == 2 and "no search index at" in done.stderr


def test_display_dims_tool_calls_and_outputs(tiny_tok):
    class Out:
        def __init__(self):
            self.writes = []

        def write(self, s):
            self.writes.append(s)

        def flush(self):
            pass

        def isatty(self):
            return True
    sp, enc = tiny_tok.special, tiny_tok.encode
    turn = [(t, False) for t in enc("Let me see.")] + [(sp("tool_start"), False)] + \
        [(t, False) for t in enc("python")] + [(sp("im_sep"), False)] + [(t, False) for t in enc("print(6*7)")] + \
        [(sp("tool_end"), False), (sp("output_start"), True)] + [(t, True) for t in enc("42")] + \
        [(sp("output_end"), True)] + [(t, False) for t in enc("It is 42.")] + [(sp("im_end"), False)]
    for color in (False, True):
        out = Out()
        display = Display(tiny_tok, out, color=color)
        for t, forced in turn:
            display.feed(t, tiny_tok.decode([t]), forced)
        text = "".join(out.writes)
        if not color:
            assert text == "Let me see.\n[python] print(6*7)\n[output] 42\nIt is 42."
        else:
            dim = [w for w in out.writes if w.startswith("\033[2m")]
            assert "".join(w[4:-4] for w in dim) == "\n[python] print(6*7)\n[output] 42\n"
            assert "".join(w for w in out.writes if w not in dim) == "Let me see.It is 42."
    assert Display(tiny_tok, Out()).color   # a terminal gets colour by default; a pipe (tests above) none


def test_stream_reply_writes_token_by_token(answer_export, tiny_tok):
    from training.conversations.render import parse_assistant, render_for_completion
    from training.engine.engine import Engine, SamplingParams
    engine = Engine.load(answer_export, tools={})
    writes = []

    class Out:
        write, flush, isatty = writes.append, staticmethod(lambda: None), staticmethod(lambda: False)
    prompt = render_for_completion(tiny_tok, [{"role": "user", "content": "6*7?"}])
    tokens, sampled, finish = stream_reply(engine, prompt, SamplingParams(temperature=0), Display(tiny_tok, Out()))
    assert finish == "stop" and writes[:-1] == [tiny_tok.decode([t]) for t in tiny_tok.encode(ANSWER)]
    assert parse_assistant(tiny_tok, tokens, sampled) == [{"type": "text", "text": ANSWER}]


def test_history_drops_oldest_turns_to_fit_the_context(tiny_tok):
    from training.conversations.render import render_for_completion
    system = {"role": "system", "content": "Be brief."}
    turns = [m for i in range(6) for m in ({"role": "user", "content": f"question {i} " + "word " * 20},
                                           {"role": "assistant", "content": [{"type": "text", "text": "ok " * 10}]})]
    messages = [system, *turns, {"role": "user", "content": "last question"}]
    full = len(render_for_completion(tiny_tok, messages))
    prompt, dropped = fit_history(tiny_tok, messages, context=full - 1 + 64, reserve=64)
    assert dropped == 1 and messages[0] == system and messages[1]["content"].startswith("question 1")
    assert prompt == render_for_completion(tiny_tok, messages) and len(prompt) + 64 <= full - 1 + 64
    prompt, dropped = fit_history(tiny_tok, messages, context=10, reserve=64)   # only the newest message left
    assert messages == [system, {"role": "user", "content": "last question"}] and dropped == 5


@pytest.fixture
def registry(tmp_path, monkeypatch, answer_export):
    """A real MLflow registry (SQLite) where crawl2chat-base@candidate is the answer model, registered
    the way the base_model asset does it."""
    import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("crawl2chat/training", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(answer_export), artifact_path="model")
    client.create_registered_model("crawl2chat-base")
    mv = client.create_model_version("crawl2chat-base", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("crawl2chat-base", "candidate", mv.version)
    env = {"MLFLOW_TRACKING_URI": uri, "CRAWL2CHAT_MODEL_CACHE": str(tmp_path / "cache")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.mark.slow
def test_the_serving_model_is_chosen_by_mlflow_alias(registry, tmp_path):
    import dagster as dg
    from assets.resources import ChatModel
    from training.conversations.render import parse_assistant, render_for_completion

    @dg.asset(group_name="serving", code_version="1", kinds={"python"})
    def reply(chat_model: ChatModel) -> str:
        engine = chat_model.load(tools=False)
        system = [{"role": "system", "content": chat_model.system_prompt}] if chat_model.system_prompt else []
        prompt = render_for_completion(engine.tokenizer, [*system, {"role": "user", "content": "6*7?"}])
        [c] = engine.generate([prompt], chat_model.sampling())
        [part] = parse_assistant(engine.tokenizer, c.tokens, c.sampled)
        return part["text"]
    assert ChatModel().model == BEST   # the default: the best model an alias points at (here the base)
    result = dg.materialize([reply], resources={"chat_model": ChatModel(temperature=0)},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.output_for_node("reply") == ANSWER

    done = chat(["--temperature", "0"], "6*7?\n", cwd=tmp_path, env=registry)   # the CLI's default model
    assert done.returncode == 0 and done.stdout == ANSWER + "\n", done.stderr
    assert "base model" in done.stderr   # it says a base model was not post-trained to chat


def _register(uri: str, name: str, export, tmp_path) -> None:
    import mlflow
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("crawl2chat/training").experiment_id
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(export), artifact_path="model")
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "candidate", mv.version)


def test_the_default_model_is_the_best_registered_chat_model(registry, tmp_path, tiny_export):  # noqa: F811
    """Bare `crawl2chat chat|serve` (and `make chat`) take the latest post-trained stage an alias
    points at, not the base model; the base only while nothing was post-trained."""
    from assets.post_training_model import CHAT_MODEL_NAME
    from assets.training import BASE_MODEL_NAME
    from assets.rl import RL_NAME, RLHF_NAME
    from training.engine.chat_cli import BEST_ORDER, best_registered
    assert BEST_ORDER == (RLHF_NAME, RL_NAME, CHAT_MODEL_NAME, BASE_MODEL_NAME)   # the names the assets register
    uri = registry["MLFLOW_TRACKING_URI"]
    assert best_registered(uri) == "crawl2chat-base@candidate"
    _register(uri, "crawl2chat-chat", tiny_export, tmp_path)   # a chat model (the random one) passed SFT
    assert best_registered(uri) == "crawl2chat-chat@candidate"
    done = chat(["--temperature", "0", "--max-tokens", "5", "--no-tools"], "6*7?\n", cwd=tmp_path, env=registry)
    assert done.returncode == 0 and done.stdout and done.stdout != ANSWER + "\n", done.stderr
    assert "base model" not in done.stderr
    _register(uri, "crawl2chat-rlhf", tiny_export, tmp_path)
    assert best_registered(uri) == "crawl2chat-rlhf@candidate"


def test_the_default_system_prompt_is_none_as_in_training():
    """The SFT conversations carry no system prompt: the CLI and the ChatModel resource add none."""
    import argparse

    from training.engine.chat_cli import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args([]).system == "" and p.parse_args([]).model == BEST


def test_a_search_tool_call_shows_inline_and_its_result_comes_from_the_index(tiny_tok, tmp_path):
    """A real engine runs the model's `search` call against a real index; the display shows the call
    and the forced output as dimmed lines between the reply's text."""
    from pipelines.document import Document
    from training.conversations.render import parse_assistant
    from training.engine.engine import Engine, SamplingParams
    from training.engine.search import build_index, search_tool
    build_index([Document("The WHATWG URL parser spec is a useful guide.", "d1", {"url": "https://a.example/url"}),
                 Document("Profiling statistics of a function.", "d2", {"url": "https://b.example/prof"})],
                tmp_path / "index.sqlite")
    sp, enc = tiny_tok.special, tiny_tok.encode
    # After "Q:" the model writes "Hi<|tool_start|>search<|im_sep|>url<|tool_end|>", the engine forces
    # <|output_start|>RESULT<|output_end|>, then the model writes " Yes." and ends its turn. (A table
    # model's script never repeats a token: hence the short words.)
    prompt = [tiny_tok.bos_id, *enc("Q:")]
    script = [prompt[-1], *enc("Hi"), sp("tool_start"), *enc("search"), sp("im_sep"), *enc("url"),
              sp("tool_end"), sp("output_end"), *enc(" Yes."), sp("im_end")]
    engine = Engine(table_model(tiny_tok, script_table(script)), tiny_tok,
                    tools={"search": search_tool(tmp_path / "index.sqlite")})
    writes = []

    class Out:
        write, flush, isatty = writes.append, staticmethod(lambda: None), staticmethod(lambda: True)
    tokens, sampled, finish = stream_reply(engine, prompt, SamplingParams(temperature=0), Display(tiny_tok, Out()))
    assert finish == "stop"
    found = "[1] https://a.example/url\nThe WHATWG URL parser spec is a useful guide."
    dimmed = "".join(w[4:-4] for w in writes if w.startswith("\033[2m"))
    assert dimmed == f"\n[search] url\n[output] {found}\n"
    assert "".join(w for w in writes if not w.startswith("\033[2m")) == "Hi Yes.\n"
    assert parse_assistant(tiny_tok, tokens, sampled) == [
        {"type": "text", "text": "Hi"}, {"type": "tool_call", "name": "search", "arguments": "url"},
        {"type": "tool_output", "text": found}, {"type": "text", "text": " Yes."}]


def test_escape_sequences_from_search_snippets_and_the_model_never_reach_the_terminal(tiny_tok, tmp_path):  # noqa: F811
    """A crawled page's text (through the search tool's snippet) and the model's own text carry
    terminal escapes: a window title (OSC 0), a clipboard write (OSC 52), colours, a screen clear, a
    carriage return. The terminal gets the words and only the display's own dimming."""
    from pipelines.document import Document
    from training.engine.engine import Engine, SamplingParams
    from training.engine.search import build_index, search_tool
    page = ("The WHATWG URL parser \x1b]0;pwned\x07spec \x1b]52;c;cm0gLXJmIH4=\x07is \x1b[31mred\x1b[0m"
            "\x1b[2J\rhere.")
    build_index([Document(page, "d1", {"url": "https://a.example/url"})], tmp_path / "index.sqlite")
    sp, enc = tiny_tok.special, tiny_tok.encode
    prompt = [tiny_tok.bos_id, *enc("Q:")]
    script = [prompt[-1], *enc("H\x1b[5mi"), sp("tool_start"), *enc("search"), sp("im_sep"), *enc("url"),
              sp("tool_end"), sp("output_end"), sp("im_end")]
    engine = Engine(table_model(tiny_tok, script_table(script)), tiny_tok,
                    tools={"search": search_tool(tmp_path / "index.sqlite")})
    writes = []

    class Out:
        write, flush, isatty = writes.append, staticmethod(lambda: None), staticmethod(lambda: True)
    tokens, _, _ = stream_reply(engine, prompt, SamplingParams(temperature=0), Display(tiny_tok, Out()))
    assert "\x1b" in tiny_tok.decode(tokens)   # the escapes did come through the model and the tool
    shown = "".join(w.removeprefix("\033[2m").removesuffix("\033[0m") for w in writes)
    assert not [c for c in shown if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0], repr(shown)
    assert shown.startswith("Hi\n[search] url\n[output] ") and "URL parser spec is red" in shown


def test_special_tokens_the_model_writes_out_of_place_are_not_shown(tiny_tok):  # noqa: F811
    writes = []

    class Out:
        write, flush, isatty = writes.append, staticmethod(lambda: None), staticmethod(lambda: False)
    sp, enc = tiny_tok.special, tiny_tok.encode
    display = Display(tiny_tok, Out())
    for t in [*enc("Hi"), sp("tool_end"), *enc(" there"), sp("output_end"), sp("im_start"), sp("im_sep"),
              sp("output_start"), *enc(" ok"), sp("im_end")]:   # none of them forced: all the model's
        display.feed(t, tiny_tok.decode([t]), False)
    assert "".join(writes) == "Hi there ok"
