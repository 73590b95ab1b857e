"""The OpenAI chat.completions request, as `crawl2chat serve` accepts it, and its error shape.

Pydantic checks the shapes and ranges and names the field of the first error; prepare() checks
what depends on the server (size limits, the model's context) and renders the prompt. Every
error is an ApiError in OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 for an
invalid field, 413 for a request too large, 429 when busy; bad input never becomes a 500.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass
class Limits:
    max_body_bytes: int = 8 << 20        # checked before parsing: nobody makes us parse a 1 GB body
    max_messages: int = 512
    max_message_chars: int = 100_000
    max_total_chars: int = 400_000       # a long conversation is cut by the context check anyway
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

class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ToolCallPart(_Part):
    type: Literal["tool_call"]
    name: str
    arguments: str


class ToolOutputPart(_Part):
    type: Literal["tool_output"]
    text: str


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
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)          # not OpenAI's; clients pass it in extra_body
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = 1
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=4)
    seed: int | None = Field(None, ge=0, lt=2**63)
    tools: list | None = None

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


def validation_error(exc: RequestValidationError) -> ApiError:
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


# ---- what a request asks the engine for -----------------------------------------------------

@dataclass
class Prepared:
    prompt: list[int]
    params: Any          # SamplingParams
    stops: list[str]


def prepare(req: ChatRequest, engine, limits: Limits) -> Prepared:
    """The checks pydantic cannot do alone (limits, the model's context), then prompt and params."""
    from training.conversations.render import render_for_completion
    from training.engine.engine import SamplingParams
    from pipelines.errors import UserError

    if len(req.messages) > limits.max_messages:
        raise ApiError(413, f"messages: {len(req.messages)} messages; the limit is {limits.max_messages}",
                       "messages", "too_many_messages")
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
    if req.n != 1:
        raise ApiError(400, f"n: only n=1 is supported (got {req.n}); send several requests", "n")
    if req.tools:
        raise ApiError(400, "tools: client-defined tools are not supported; the model's own tools (python, "
                       "search) run inside the server and show in the reply", "tools")

    context = engine.model.config.block_size
    try:
        prompt = render_for_completion(engine.tokenizer, [_engine_message(m) for m in req.messages])
    except UserError as e:
        raise ApiError(400, str(e), "messages") from e
    room = context - len(prompt)
    if room < 1:
        raise ApiError(400, f"messages: the conversation is {len(prompt)} tokens and this model's context is "
                       f"{context}: drop or shorten earlier messages", "messages", "context_length_exceeded")
    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked > context:
        name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{name}: at most {context} (this model's context), got {asked}", name)
    # Within the context but past what is left of it: generate what fits, finish_reason "length".
    params = SamplingParams(max_tokens=min(asked or room, room),
                            temperature=1.0 if req.temperature is None else req.temperature,
                            top_k=req.top_k, top_p=req.top_p,
                            seed=secrets.randbits(31) if req.seed is None else req.seed)
    return Prepared(prompt, params, list(req.stop or []))


def _engine_message(m: Message) -> dict:
    role = "system" if m.role == "developer" else m.role  # OpenAI's newer name for the system role
    if all(p.type == "text" for p in m.content):
        return {"role": role, "content": "".join(p.text for p in m.content)}
    return {"role": role, "content": [p.model_dump() for p in m.content]}
