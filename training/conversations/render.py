"""Messages <-> tokens, in the chat protocol of the tokenizer's reserved special tokens.

    <|endoftext|><|im_start|>system<|im_sep|>...<|im_end|><|im_start|>user<|im_sep|>...<|im_end|>
    <|im_start|>assistant<|im_sep|>TEXT<|tool_start|>python<|im_sep|>CODE<|tool_end|>
    <|output_start|>RESULT<|output_end|>TEXT<|im_end|>

A conversation starts with <|endoftext|>, the token every pretraining document starts with. Messages
are OpenAI-style dicts {"role": "system" | "user" | "assistant", "content": str | list[part]}; an
assistant's content may be a list of parts
    {"type": "text", "text": ...}
    {"type": "tool_call", "name": "python", "arguments": "..."}
    {"type": "tool_output", "text": "..."}
System and user content may be a list of text parts. The loss mask trains what the model itself
writes: the assistant's text, tool calls and closing <|im_end|>; not the prompts, not the role
headers, not tool outputs (the engine forces those). Text never encodes to special tokens, so a
message that contains "<|im_end|>" cannot end its turn.
"""
from __future__ import annotations

from pipelines.errors import UserError

ROLES = ("system", "user", "assistant")
PART_FIELDS = {"text": {"text"}, "tool_call": {"name", "arguments"}, "tool_output": {"text"}}


class ConversationError(UserError):
    """A message or content part is malformed; the message names it (e.g. messages[2].content[0].name)."""


def render_for_completion(tokenizer, messages: list[dict], where: str = "messages") -> list[int]:
    """Prompt ids for the assistant's next turn: the conversation, then <|im_start|>assistant<|im_sep|>."""
    _check(messages, where)
    if messages[-1]["role"] == "assistant":
        raise ConversationError(f"{where}[{len(messages) - 1}].role: the conversation ends with the assistant's "
                                "turn; end it with a user message for the assistant to answer")
    ids, _ = _render(tokenizer, messages, where)
    return ids + _header(tokenizer, "assistant")


def validate(messages: list[dict], where: str = "messages", training: bool = False) -> None:
    """ConversationError naming the message and field unless `messages` is a conversation we can
    render; with training=True also one SFT can learn from (_check_order)."""
    _check(messages, where)
    if training:
        _check_order(messages, where)


def render_conversation(tokenizer, messages: list[dict], where: str = "messages",
                        max_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """(ids, loss mask): mask 1 on the tokens the assistant writes (text, tool calls, its <|im_end|>).
    A training conversation must be well formed (see _check_order) and, with max_tokens, fit."""
    validate(messages, where, training=True)
    ids, mask = _render(tokenizer, messages, where)
    if max_tokens is not None and len(ids) > max_tokens:
        raise ConversationError(f"{where}: {len(ids)} tokens, more than the {max_tokens} the model's context "
                                "holds; shorten or split the conversation")
    return ids, mask


def parse_assistant(tokenizer, tokens: list[int], sampled: list[bool]) -> list[dict]:
    """An engine completion (tokens after <|im_start|>assistant<|im_sep|>) as content parts.

    Stops at <|im_end|> / <|endoftext|>. An unfinished tool call or output (the length ran out) is
    returned as far as it got. Tool outputs come only from forced tokens: output markers the model
    sampled itself are a made-up output and stay in the text as their strings."""
    if len(tokens) != len(sampled):
        raise ValueError(f"{len(tokens)} tokens but {len(sampled)} sampled flags")
    sp = {n: tokenizer.special(n) for n in ("im_end", "endoftext", "tool_start", "im_sep", "tool_end",
                                             "output_start", "output_end")}
    parts: list[dict] = []
    state, buf, name = "text", [], []

    def flush_text():
        if buf:
            text = tokenizer.decode(buf)
            if parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += text
            else:
                parts.append({"type": "text", "text": text})
        buf.clear()

    for t, s in zip(tokens, sampled):
        if s and t in (sp["im_end"], sp["endoftext"]):
            break
        if state == "text" and s and t == sp["tool_start"]:
            flush_text()
            state, name = "name", []
        elif state == "text" and not s and t == sp["output_start"]:
            flush_text()
            state = "output"
        elif state == "name" and t == sp["im_sep"]:
            state = "args"
        elif state in ("name", "args") and t == sp["tool_end"]:
            parts.append({"type": "tool_call", "name": tokenizer.decode(name).strip(),
                          "arguments": tokenizer.decode(buf)})
            state = "text"
            buf.clear()
        elif state == "output" and t == sp["output_end"]:
            parts.append({"type": "tool_output", "text": tokenizer.decode(buf)})
            state = "text"
            buf.clear()
        else:
            (name if state == "name" else buf).append(t)
    if state == "text":
        flush_text()
    elif state == "output":
        parts.append({"type": "tool_output", "text": tokenizer.decode(buf)})
    else:
        parts.append({"type": "tool_call", "name": tokenizer.decode(name).strip(), "arguments": tokenizer.decode(buf)})
    return parts


# ---- internals ------------------------------------------------------------------------------

def _header(tok, role: str) -> list[int]:
    return [tok.special("im_start"), *tok.encode(role), tok.special("im_sep")]


def _render(tok, messages: list[dict], where: str) -> tuple[list[int], list[int]]:
    ids, mask = [tok.bos_id], [0]

    def add(new: list[int], trained: bool):
        ids.extend(new)
        mask.extend([int(trained)] * len(new))

    for m in messages:
        role, content = m["role"], m["content"]
        add(_header(tok, role), False)
        assistant = role == "assistant"
        for part in ([{"type": "text", "text": content}] if isinstance(content, str) else content):
            if part["type"] == "text":
                add(tok.encode(part["text"]), assistant)
            elif part["type"] == "tool_call":
                add([tok.special("tool_start"), *tok.encode(part["name"]), tok.special("im_sep"),
                     *tok.encode(part["arguments"]), tok.special("tool_end")], True)
            else:  # tool_output: forced by the engine, never trained
                add([tok.special("output_start"), *tok.encode(part["text"]), tok.special("output_end")], False)
        add([tok.special("im_end")], assistant)
    return ids, mask


def _check_order(messages: list[dict], where: str) -> None:
    """Training conversations: an optional system message, then user and assistant turns taking
    turns from a user message, at least one assistant turn, and no empty message."""
    first = 1 if messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages[first:], start=first):
        want = "user" if (i - first) % 2 == 0 else "assistant"
        if m["role"] != want:
            raise ConversationError(f"{where}[{i}].role: expected {want!r} here (after an optional system "
                                    f"message, user and assistant take turns), got {m['role']!r}")
        content = m["content"]
        texts = [content] if isinstance(content, str) else [p.get("text") or p.get("arguments") or ""
                                                            for p in content]
        if not any(t.strip() for t in texts):
            raise ConversationError(f"{where}[{i}].content: empty {m['role']} message")
    if len(messages) - first < 2:
        raise ConversationError(f"{where}: no assistant message, so nothing to train on")


def _check(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ConversationError(f"{where}: expected a non-empty list of messages, got {type(messages).__name__}"
                                + (" (empty)" if isinstance(messages, list) else ""))
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise ConversationError(f"{at}: expected a message dict with role and content, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise ConversationError(f"{at}.role: {role!r} is not one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise ConversationError(f"{at}.role: a system message may only come first")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ConversationError(f"{at}.content: expected a string or a list of parts, got "
                                    f"{type(content).__name__}")
        allowed = PART_FIELDS if role == "assistant" else {"text": PART_FIELDS["text"]}
        for j, part in enumerate(content):
            pat = f"{at}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                raise ConversationError(f"{pat}.type: {kind!r} is not a {role} part type "
                                        f"({', '.join(allowed)})")
            for key in sorted(PART_FIELDS[kind]):
                if not isinstance(part.get(key), str):
                    raise ConversationError(f"{pat}.{key}: expected a string, got {type(part.get(key)).__name__}")
            if kind == "tool_call" and not part["name"].strip():
                raise ConversationError(f"{pat}.name: the tool name is empty")
