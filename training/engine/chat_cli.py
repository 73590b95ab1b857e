"""`crawl2chat chat`: talk to a model in the terminal.

    crawl2chat chat                                    # the best registered chat model (see BEST)
    crawl2chat chat --model lake/models/base/<run>/export --temperature 0.7 --top-k 50
    crawl2chat chat --base                             # a base model continues documents
    printf 'Hi\\n/reset\\nWhat is 6*7?\\n' | crawl2chat chat --model DIR   # scripted: one message per line

Replies stream token by token. Tool calls and their outputs show inline, dimmed (ANSI colour only
when stdout is a terminal): `[python] CODE`, then `[output] RESULT`. Nothing the model, a tool or a
web page wrote reaches the terminal as a control sequence: escapes and control characters are
stripped before writing (a search snippet could otherwise retitle the window or rewrite the
screen). The conversation is rendered with `render_for_completion`, the same code that renders the
training conversations, so what the model sees here is what it was trained on. When the history
outgrows the model's context the oldest turns are dropped (the system prompt stays) and the CLI
says so; `crawl2chat serve` does the same on request (openai_protocol: crawl2chat_trim_history).

--base is raw continuation: a pretrained base model is a document completer, not an assistant.
Each line is the start of a new document (after <|endoftext|>, as in pretraining) and the model
writes what might follow; there is no history and there are no tools.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from pipelines.errors import InputError

# The default model: the latest post-training stage whose `candidate` alias exists (the alias moves
# only when a stage passes its checks), the base model when none was post-trained yet. The names
# are the ones assets/post_training_model.py and assets/rl.py register (a test keeps them equal).
BEST = "crawl2chat@best"
BEST_ORDER = ("crawl2chat-rlhf", "crawl2chat-rl", "crawl2chat-chat", "crawl2chat-base")
DEFAULT_MODEL = BEST
# No system prompt by default: the SFT conversations have none, and a prompt the model never saw in
# training lowers how often it answers as trained (issue 22 measured its identity rate dropping).
DEFAULT_SYSTEM = ""
# Sampling defaults for chat (the ChatModel Dagster resource shares them).
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_k": 50, "top_p": None, "max_tokens": 256, "seed": 0}
# Below these a sampling value means "the likeliest token" but breaks the arithmetic: logits divided
# by 1e-39 overflow to inf (NaN probabilities), and a float32 top-p of 1e-300 is 0 (every token dropped).
MIN_TEMPERATURE = 1e-3   # smaller (but > 0) -> 0, greedy: what the limit of temperature -> 0 is
MIN_TOP_P = 1e-6         # smaller -> 1e-6: still only the likeliest token, as the value asks
HELP = "/reset starts over, /quit ends; Ctrl-C stops a reply, Ctrl-D quits"
BASE_NOTE = ("base mode: a base model is a document completer, not an assistant. It does not answer: it "
             "continues the text you type as if it were the start of a web page. Each line starts a new document.")
MIN_REPLY_TOKENS = 64   # history is trimmed so that at least this much (or --max-tokens) is left to reply
MODEL_HELP = (f"export directory, or a registered model NAME@ALIAS / NAME/VERSION (default {BEST}: the first of "
              f"{', '.join(n + '@candidate' for n in BEST_ORDER)} that is registered)")
_REGISTERED = re.compile(r"^(?:models:/)?[^@/]+(?:@[^/@]+|/\d+)$")   # NAME@ALIAS, NAME/VERSION


def add_arguments(p) -> None:
    d = SAMPLING_DEFAULTS
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt (default none, as in training)")
    p.add_argument("--temperature", type=float, default=d["temperature"], help="0 = greedy (default %(default)s)")
    p.add_argument("--top-k", type=int, default=d["top_k"], help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=d["top_p"], help="nucleus sampling: smallest set with this mass")
    p.add_argument("--max-tokens", type=int, default=d["max_tokens"], help="most tokens per reply (default %(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"], help="same seed and input -> same reply (default %(default)s)")
    p.add_argument("--base", action="store_true", help="continue raw text (a base model completes documents)")
    p.add_argument("--no-tools", action="store_true", help="no python or search tool")
    p.add_argument("--search-index", type=Path, default=None,
                   help="index.sqlite for the search tool (default: the newest under the lake's search/)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


class Display:
    """Writes a reply's token events: text as it comes, tool calls and outputs as dimmed lines
    `[NAME] ARGS` / `[output] RESULT`; a special token anywhere else (end of turn, or one the model
    wrote out of place) not at all: special tokens are structure, never text."""

    def __init__(self, tokenizer, out=None, color: bool | None = None):
        self.out = out or sys.stdout
        self.color = (self.out.isatty() and not os.environ.get("NO_COLOR")) if color is None else color
        sp = tokenizer.special
        self.ids = {sp(n): n for n in ("im_end", "endoftext", "tool_start", "im_sep", "tool_end",
                                       "output_start", "output_end")}
        self.specials = set(tokenizer.special_ids.values())
        self.state = "text"   # text | name | args | output
        self.pending = ""     # the start of an escape sequence, held until it ends (see write)

    def feed(self, token: int, text: str, forced: bool = False) -> None:
        kind, state = self.ids.get(token), self.state
        if kind == "tool_start" and state == "text" and not forced:
            self.state, shown = "name", "\n["
        elif kind == "im_sep" and state == "name":
            self.state, shown = "args", "] "
        elif kind == "tool_end" and state in ("name", "args"):   # the engine runs the call either way
            self.state, shown = "text", "]\n" if state == "name" else "\n"
        elif kind == "output_start" and forced:   # only the engine opens an output (never the model)
            self.state, shown = "output", "[output] "
        elif kind == "output_end" and state == "output":
            self.state, shown = "text", "\n"
        elif token in self.specials:
            return
        elif state == "text":
            self.write(text)
            return
        else:
            shown = text
        self.write(shown, dim=True)

    def write(self, text: str, dim: bool = False) -> None:
        # A sequence split across tokens is held until it completes (then stripped whole), so no
        # "[31m" is left behind when the ESC came in the previous token.
        text, self.pending = self.pending + text, ""
        if (cut := _UNFINISHED.search(text)) and len(text) - cut.start() < 512:
            text, self.pending = text[:cut.start()], text[cut.start():]
        text = printable(text)
        if text:
            self.out.write(f"\033[2m{text}\033[0m" if dim and self.color else text)
            self.out.flush()


# ESC sequences whole (CSI, OSC/DCS/APC/PM/SOS strings, two-character escapes), then any other C0
# control but tab and newline, DEL and the C1 controls (0x9b is a one-byte CSI on some terminals).
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]", re.S)
_UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[]PX^_][^\x07\x1b]*)?\Z")


def printable(text: str) -> str:
    """text without terminal control sequences: what a model, a tool or a crawled page wrote can
    colour nothing, move no cursor, set no window title and write no clipboard."""
    return _CONTROL.sub("", text)


def usable_sampling(temperature: float, top_p: float | None) -> tuple[float, float | None]:
    """(temperature, top_p) with the values below MIN_TEMPERATURE / MIN_TOP_P moved to what they mean;
    the CLI and the server both sample through this."""
    return (0.0 if 0 <= temperature < MIN_TEMPERATURE else temperature,
            None if top_p is None else max(top_p, MIN_TOP_P) if top_p > 0 else top_p)


def note(text: str) -> None:
    print(f"crawl2chat: {text}", file=sys.stderr, flush=True)


def resolve_search_index(arg: Path | None) -> Path | None:
    """--search-index must exist; without it, the newest index under the lake (or none)."""
    from training.engine.search import SearchIndex, latest_index
    if arg is not None:
        SearchIndex(arg)   # InputError naming the path when it is not an index
        return arg
    return latest_index(os.environ.get("CRAWL2CHAT_LAKE") or Path.cwd() / "lake")


def _registry_uri() -> str:
    """The MLflow registry a NAME@ALIAS is looked up in: the same default the engine and the
    Dagster assets use."""
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{Path(os.environ.get('DAGSTER_HOME') or Path.cwd() / 'dagster_home') / 'mlflow.db'}"


def best_registered(uri: str) -> str:
    """BEST resolved: the first of BEST_ORDER with a `candidate` alias in the registry at uri."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in BEST_ORDER:
        try:
            client.get_model_version_by_alias(name, "candidate")
            return f"{name}@candidate"
        except MlflowException:
            continue
    raise InputError(f"no model with the alias candidate in MLflow at {uri} (looked for "
                     f"{', '.join(BEST_ORDER)})")


def load_engine(ref: str, tools: dict, device: str | None):
    from training.engine.engine import Engine
    registered = not Path(ref).exists() and bool(_REGISTERED.match(ref))
    hint = "`make demo` trains and registers the models, or pass --model EXPORT_DIR"
    uri = _registry_uri()
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if registered and db is not None and not db.is_file():
        # Checked first: MLflow would create an empty registry there and then not find the model.
        raise InputError(f"no MLflow registry at {db} to look up {ref!r}: {hint} (or set MLFLOW_TRACKING_URI)")
    try:
        if ref == BEST and not Path(ref).exists():
            ref = best_registered(uri)
        return Engine.load(ref, tools=tools, device=device)
    except InputError as e:
        if registered:
            raise InputError(f"{e}; {hint}") from None
        raise


def fit_history(tok, messages: list[dict], context: int, reserve: int) -> tuple[list[int], int]:
    """The prompt for `messages`, dropping the oldest turns (never the system prompt or the newest
    user message) until `reserve` tokens are left for the reply; returns (prompt, turns dropped)."""
    from training.conversations.render import render_for_completion
    head = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    while True:
        prompt = render_for_completion(tok, messages)
        if len(prompt) + reserve <= context or len(messages) - head <= 1:
            return prompt, dropped
        del messages[head]                      # a user message, then its assistant reply(ies)
        while len(messages) - head > 1 and messages[head]["role"] != "user":
            del messages[head]
        dropped += 1


def stream_reply(engine, prompt: list[int], params, display: Display) -> tuple[list[int], list[bool], str]:
    """Stream one reply to the display; Ctrl-C stops it and keeps what came so far."""
    tokens, sampled, finish = [], [], "cancelled"
    display.state = "text"   # a reply cut off inside a tool call does not dim the next one
    try:
        for ev in engine.stream(prompt, params):
            display.feed(ev.token, ev.text, ev.forced)
            tokens.append(ev.token)
            sampled.append(not ev.forced)
            finish = ev.finish_reason or finish
    except KeyboardInterrupt:
        display.write(" [stopped]", dim=True)
    display.write("\n")
    return tokens, sampled, finish


def read_lines(interactive: bool):
    """User input, one message per line: a prompt with line editing on a terminal, else stdin lines."""
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()
        while True:
            try:
                yield input("you> ")
            except EOFError:
                print()
                return
    else:
        while line := sys.stdin.readline():
            yield line.rstrip("\r\n")


def main(args) -> int:
    from training.engine.engine import SamplingParams
    from training.engine.tools import default_tools, isolation_line
    temperature, top_p = usable_sampling(args.temperature, args.top_p)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=temperature,
                            top_k=args.top_k or None, top_p=top_p, seed=args.seed)
    params.validate()
    index = None if args.base or args.no_tools else resolve_search_index(args.search_index)
    tools = {} if args.base or args.no_tools else default_tools(index)
    engine = load_engine(args.model, tools, args.device)
    context = engine.model.config.block_size
    interactive = sys.stdin.isatty()
    if interactive:
        shown = ", ".join(sorted(tools)) or "none"
        note(f"{engine.model_name} on {engine.device} (context {context} tokens); tools: {shown}"
             + (f" (search: {index})" if index else ""))
        if line := isolation_line(tools):  # sandboxed, or why the python tool is disabled (issue 23)
            note(line)
        note(HELP)
    if args.base:
        note(BASE_NOTE)
        return _base_loop(engine, params, read_lines(interactive))
    if re.match(r"^(?:models:/)?[^@/]*-base\b", engine.model_name):
        note(f"{engine.model_name} is a pretrained base model: it has not been post-trained to chat, so expect it "
             "to continue text rather than answer (--base shows what it does best)")
    return _chat_loop(engine, params, args.system, read_lines(interactive), context)


def _chat_loop(engine, params, system: str, lines, context: int) -> int:
    from training.conversations.render import parse_assistant
    tok, display = engine.tokenizer, Display(engine.tokenizer)
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    reserve = min(params.max_tokens, MIN_REPLY_TOKENS)
    for line in lines:
        command = line.strip()
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            messages = list(start)
            note("conversation reset")
            continue
        if command.startswith("/") or not command:
            if command:
                note(f"unknown command {command}: {HELP}")
            continue
        messages.append({"role": "user", "content": line})
        prompt, dropped = fit_history(tok, messages, context, reserve)
        if dropped:
            note(f"dropped the {dropped} oldest turn(s): the conversation outgrew the model's context "
                 f"of {context} tokens")
        if len(prompt) >= context:
            note(f"that message is {len(prompt)} tokens with the system prompt; the model's context is "
                 f"{context}: say it shorter")
            messages.pop()
            continue
        tokens, sampled, _ = stream_reply(engine, prompt, params, display)
        messages.append({"role": "assistant", "content": parse_assistant(tok, tokens, sampled)})
    return 0


def _base_loop(engine, params, lines) -> int:
    tok, display = engine.tokenizer, Display(engine.tokenizer)
    context = engine.model.config.block_size
    for line in lines:
        if line.strip() in ("/quit", "/exit"):
            break
        if not line.strip() or line.strip() == "/reset":
            continue
        text = tok.encode(line)
        keep = max(1, context - 1 - min(params.max_tokens, MIN_REPLY_TOKENS))
        display.write(line, dim=True)   # the document so far, then what the model adds
        stream_reply(engine, [tok.bos_id, *text[-keep:]], params, display)
    return 0
