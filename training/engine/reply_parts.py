"""A reply as it streams: the engine's token events folded into content parts and Markdown.

    parts = PartStream(engine.tokenizer, stops=["\\n\\n"])
    for ev in engine.stream(prompt, params):
        pieces, markdown = parts.feed(ev.token, ev.text, ev.forced)   # what grew, for a client
    parts.finish(); parts.parts        # == render.parse_assistant(tokenizer, tokens, sampled)

The parts are render.py's (text / tool_call / tool_output), so a client can send them back as the
assistant's content and the model sees its own tool calls again token for token. The Markdown is
for clients that show only `content`: tool calls and outputs as fenced blocks (```python, ```output).
"""
from __future__ import annotations


class PartStream:
    """Folds the engine's token events into content parts as they grow, by the rules of
    render.parse_assistant (which parses a finished completion): a sampled <|tool_start|> opens a
    call, a forced <|output_start|> an output, a sampled <|im_end|> / <|endoftext|> ends the reply.

    feed() returns pieces {"index", "type", "text" | "arguments" [, "name"]} to append to part
    `index` (a new index starts a part) and the same growth as Markdown for the plain `content`.
    Special tokens are structure, never text: one the model writes out of place (a <|tool_end|> with
    no call open, an <|im_sep|> in the text) is left out of the parts and the Markdown, where
    parse_assistant keeps its string.
    Stop strings apply to text parts; text that may be the start of one is held back until it is
    not. Only the held-back tail and the new text are scanned, so a token costs O(stop length), not
    O(reply length); the server bounds the stop length (openai_protocol.Limits.max_stop_chars).
    """

    def __init__(self, tokenizer, stops: list[str] = ()):
        sp = tokenizer.special
        self.ids = {sp(n): n for n in ("im_end", "endoftext", "tool_start", "tool_end", "im_sep",
                                       "output_start", "output_end")}
        self.specials = set(tokenizer.special_ids.values())
        self.parts: list[dict] = []
        self.state = "text"          # text | name | args | output
        self.name = ""
        self.stops, self.held = list(stops), ""
        self.ended = False           # the reply's end token came, or a stop string matched
        self.stopped_by_string = False

    def feed(self, token: int, text: str, forced: bool) -> tuple[list[dict], str]:
        pieces, md = [], []
        kind = self.ids.get(token)
        if self.ended:
            pass
        elif not forced and kind in ("im_end", "endoftext"):
            self.ended = True
        elif self.state == "text" and not forced and kind == "tool_start":
            self._flush_held(pieces, md)
            self.state, self.name = "name", ""
        elif self.state == "text" and forced and kind == "output_start":
            self._flush_held(pieces, md)
            self.state = "output"
            self._open({"type": "tool_output", "text": ""}, pieces, md, "```output\n")
        elif self.state == "name" and kind == "im_sep":
            self.state = "args"
            self._open_call(pieces, md)
        elif self.state in ("name", "args") and kind == "tool_end":
            if self.state == "name":
                self._open_call(pieces, md)
            self.state = "text"
            md.append("\n```\n")
        elif self.state == "output" and kind == "output_end":
            self.state = "text"
            md.append("\n```\n\n")
        elif token in self.specials:
            pass   # out of place: not shown as text (see the class doc)
        elif self.state == "name":
            self.name += text
        elif self.state in ("args", "output"):
            self._append("arguments" if self.state == "args" else "text", text, pieces, md)
        else:
            self._text(text, pieces, md)
        return pieces, "".join(md)

    def finish(self) -> tuple[list[dict], str]:
        """What is still held back, and the closing of a call or output the length cut short."""
        pieces, md = [], []
        self._flush_held(pieces, md)
        if self.state == "name":
            self._open_call(pieces, md)
        if self.state in ("name", "args"):
            md.append("\n```\n")
        elif self.state == "output":
            md.append("\n```\n\n")
        self.state = "text"
        return pieces, "".join(md)

    def markdown(self) -> str:
        """The whole reply as `content`: what feed()'s and finish()'s Markdown add up to."""
        out = []
        for p in self.parts:
            if p["type"] == "tool_call":
                out.append(f"\n\n```{p['name']}\n{p['arguments']}\n```\n")
            elif p["type"] == "tool_output":
                out.append(f"```output\n{p['text']}\n```\n\n")
            else:
                out.append(p["text"])
        return "".join(out)

    def _open_call(self, pieces: list, md: list) -> None:
        name = self.name.strip()
        self._open({"type": "tool_call", "name": name, "arguments": ""}, pieces, md, f"\n\n```{name}\n")

    def _open(self, part: dict, pieces: list, md: list, markdown: str = "") -> None:
        self.parts.append(dict(part))
        pieces.append({"index": len(self.parts) - 1, **part})
        md.append(markdown)

    def _append(self, field: str, text: str, pieces: list, md: list) -> None:
        if not text:
            return
        self.parts[-1][field] += text
        pieces.append({"index": len(self.parts) - 1, "type": self.parts[-1]["type"], field: text})
        md.append(text)

    def _text(self, text: str, pieces: list, md: list) -> None:
        s = self.held + text
        hits = [i for i in (s.find(t) for t in self.stops) if i >= 0]
        if hits:
            s, self.held, self.ended, self.stopped_by_string = s[:min(hits)], "", True, True
        else:  # hold back the longest tail that could still grow into a stop string
            keep = max((_partial(s, t) for t in self.stops), default=0)
            s, self.held = s[:len(s) - keep], s[len(s) - keep:]
        if s and (not self.parts or self.parts[-1]["type"] != "text"):
            self._open({"type": "text", "text": ""}, pieces, md)
        self._append("text", s, pieces, md)

    def _flush_held(self, pieces: list, md: list) -> None:
        held, stops, self.held, self.stops = self.held, self.stops, "", []
        self._text(held, pieces, md)
        self.stops = stops


def _partial(s: str, stop: str) -> int:
    """The length of the longest tail of s that is a proper start of stop (0: none)."""
    for i in range(max(0, len(s) - len(stop) + 1), len(s)):   # longest first
        if stop.startswith(s[i:]):
            return len(s) - i
    return 0
