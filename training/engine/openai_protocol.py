"""The OpenAI chat.completions request, as `crawl2chat serve` accepts it, and its error shape.

Pydantic checks the shapes and ranges and names the field of the first error; prepare() checks
what depends on the server (size limits, the model's context) and renders the prompt. Every
error is an ApiError in OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 for an
invalid field (invalid Unicode, NaN, a stop string past its length included), 413 for a request too
large, 429 when busy; bad input never becomes a 500. Sampling values too small for float32
arithmetic are moved to what they mean (chat_cli.usable_sampling).
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator


@dataclass
class Limits:
    max_body_bytes: int = 2 << 20        # checked before parsing (by Content-Length and while it streams)
    body_timeout_s: float = 30.0         # the whole body must arrive within this (a stalled client: 408)
    max_messages: int = 512              # counted right after the JSON parse, before any validation
    max_message_chars: int = 100_000
    max_total_chars: int = 400_000       # a long conversation is cut by the context check anyway
    max_stop_chars: int = 256            # per stop string (at most 4): the scan for them stays cheap
    request_timeout_s: float = 300.0     # waiting + generating; past it the reply ends, finish "length"
    max_queue: int = 8                   # requests waiting while one generates; more get 429


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# ---- request shapes -------------------------------------------------------------------------

def _valid_unicode(s: str) -> str:
    """JSON can escape a lone UTF-16 surrogate ("\\ud800"), which no text encoding can carry: the
    tokenizer would fail on it mid-request. Refused here, naming the field."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"invalid Unicode: a lone surrogate {s[e.start]!a} at character {e.start}") from None
    return s


Text = Annotated[str, AfterValidator(_valid_unicode)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    type: Literal["text"]
    text: Text


class ToolCallPart(_Part):
    type: Literal["tool_call"]
    name: Text
    arguments: Text


class ToolOutputPart(_Part):
    type: Literal["tool_output"]
    text: Text


Part = Annotated[Union[TextPart, ToolCallPart, ToolOutputPart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients may send "name" and the like
    role: Literal["system", "developer", "user", "assistant"]
    content: list[Part]

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_text_part(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [{"type": "text", "text": v}]
        if not isinstance(v, list):
            raise ValueError('must be a string or a list of parts like {"type": "text", "text": "..."}')
        return v

    def chars(self) -> int:
        return sum(len(getattr(p, "text", "") or getattr(p, "arguments", "")) for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat.completions request; fields we do not use (user, logprobs, ...) are ignored."""
    model_config = ConfigDict(extra="ignore")
    model: Text | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)          # not OpenAI's; clients pass it in extra_body
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = 1
    stop: list[Annotated[Text, Field(min_length=1)]] | None = Field(None, max_length=4)
    seed: int | None = Field(None, ge=0, lt=2**63)
    tools: list | None = None
    # Not OpenAI's: drop the oldest turns (the system prompt stays) when the conversation does not
    # leave room for a reply, as `crawl2chat chat` does; the reply says how many messages went. The
    # web page sets it. Without it, a conversation past the context is refused (400), as OpenAI does.
    crawl2chat_trim_history: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def _where(loc: tuple) -> str:
    """('body', 'messages', 3, 'content', 0, 'text') -> 'messages[3].content[0].text'"""
    out, after_index = "", False
    for x in loc[1:] if loc and loc[0] == "body" else loc:
        if after_index and x in ("text", "tool_call", "tool_output"):
            after_index = False  # pydantic names the part type it tried; the user wrote no such field
        elif isinstance(x, int):
            out, after_index = out + f"[{x}]", True
        else:
            out, after_index = out + (f".{x}" if out else str(x)), False
    return out


def validation_error(exc: RequestValidationError | ValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json")
    where = _where(tuple(first.get("loc", ())))
    got = first.get("input")
    shown = f" (got {json.dumps(got)[:80]})" if isinstance(got, (int, float, str, bool)) else ""
    more = f"; {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")
    return ApiError(400, f"{where or 'body'}: {msg}{shown}{more}", param=where or None)


def parse_request(raw: bytes, limits: Limits) -> ChatRequest:
    """The body (already bounded in size by http_guard) as a ChatRequest. The message count is
    checked right after the JSON parse and before validation: validating 200k tiny messages into
    objects is what costs seconds, not reading them."""
    def no_constant(name: str):
        raise ApiError(400, f"the body is not valid JSON: {name} is not a JSON number", code="invalid_json")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the body is not UTF-8 text: {e.reason} at byte {e.start}", code="invalid_json") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply to parse", code="invalid_json") from None
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise ApiError(413, f"messages: {len(messages)} messages; the limit is {limits.max_messages}",
                       "messages", "too_many_messages")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as e:
        raise validation_error(e) from None


# ---- what a request asks the engine for -----------------------------------------------------

@dataclass
class Prepared:
    prompt: list[int]
    params: Any          # SamplingParams
    stops: list[str]
    dropped: int = 0     # messages left out from the start of the history (crawl2chat_trim_history)


def prepare(req: ChatRequest, engine, limits: Limits) -> Prepared:
    """The checks pydantic cannot do alone (limits, the model's context), then prompt and params."""
    from training.conversations.render import render_for_completion
    from training.engine.chat_cli import MIN_REPLY_TOKENS, fit_history, usable_sampling
    from training.engine.engine import SamplingParams
    from pipelines.errors import UserError

    total = 0
    for i, m in enumerate(req.messages):
        n = m.chars()
        total += n
        if n > limits.max_message_chars:
            raise ApiError(413, f"messages[{i}].content: {n} characters; the limit is {limits.max_message_chars} "
                           "per message", f"messages[{i}].content", "message_too_long")
    if total > limits.max_total_chars:
        raise ApiError(413, f"messages: {total} characters in all; the limit is {limits.max_total_chars}",
                       "messages", "conversation_too_long")
    for i, stop in enumerate(req.stop or []):
        if len(stop) > limits.max_stop_chars:
            raise ApiError(400, f"stop[{i}]: {len(stop)} characters; the limit is {limits.max_stop_chars}",
                           f"stop[{i}]", "stop_too_long")
    if req.n != 1:
        raise ApiError(400, f"n: only n=1 is supported (got {req.n}); send several requests", "n")
    if req.tools:
        raise ApiError(400, "tools: client-defined tools are not supported; the model's own tools (python, "
                       "search) run inside the server and show in the reply", "tools")

    context = engine.model.config.block_size
    asked = req.max_completion_tokens or req.max_tokens
    messages = [_engine_message(m) for m in req.messages]
    try:
        if req.crawl2chat_trim_history:  # the CLI's rule: oldest turns first, the system prompt kept
            prompt, _ = fit_history(engine.tokenizer, messages, context, min(asked or context, MIN_REPLY_TOKENS))
        else:
            prompt = render_for_completion(engine.tokenizer, messages)
    except UserError as e:
        raise ApiError(400, str(e), "messages") from e
    room = context - len(prompt)
    if room < 1:
        hint = ("the newest message alone does not fit: say it shorter" if req.crawl2chat_trim_history else
                "drop or shorten earlier messages (or send \"crawl2chat_trim_history\": true to have the "
                "oldest turns dropped)")
        raise ApiError(400, f"messages: the conversation is {len(prompt)} tokens and this model's context is "
                       f"{context}: {hint}", "messages", "context_length_exceeded")
    if asked is not None and asked > context:
        name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{name}: at most {context} (this model's context), got {asked}", name)
    temperature, top_p = usable_sampling(1.0 if req.temperature is None else req.temperature, req.top_p)
    # Within the context but past what is left of it: generate what fits, finish_reason "length".
    params = SamplingParams(max_tokens=min(asked or room, room), temperature=temperature, top_k=req.top_k,
                            top_p=top_p, seed=secrets.randbits(31) if req.seed is None else req.seed)
    return Prepared(prompt, params, list(req.stop or []), len(req.messages) - len(messages))


def _engine_message(m: Message) -> dict:
    role = "system" if m.role == "developer" else m.role  # OpenAI's newer name for the system role
    if all(p.type == "text" for p in m.content):
        return {"role": role, "content": "".join(p.text for p in m.content)}
    return {"role": role, "content": [p.model_dump() for p in m.content]}
