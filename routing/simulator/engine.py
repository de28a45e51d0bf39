"""The provider-neutral "model": a parsed conversation in, a deterministic reply out.

Every protocol module turns its wire request into a `Conversation`, asks
`generate()` for a `Reply`, and renders that reply in its own wire format.
Keeping the arithmetic here is what makes the four providers agree on token
counts and answers, so a gateway test can predict them whichever one answered.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

import orjson

DEFAULT_CONTEXT_WINDOW = 128_000
SMALL_CONTEXT_WINDOW = 1_000
# Chat formats wrap each message in role markers; real tokenizers charge a few
# tokens for them, and tests want prompts with equal text to cost the same.
PER_MESSAGE_TOKENS = 3
QUOTED_CHARS = 60
CHARS_PER_TOKEN = 4

Turn = Literal["user", "tool", "assistant"]
Finish = Literal["stop", "stop_sequence", "length", "tool"]

# A per-process prefix keeps ids unique across simulator restarts (a gateway
# ledger may be unique on them); the counter keeps minting cheap.
_ID_PREFIX = os.urandom(3).hex()
_id_counter = count(1)


def new_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def now() -> int:
    return int(time.time())


@dataclass(slots=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass(slots=True)
class Conversation:
    provider: str
    model: str
    # Text of every system prompt and message, one entry per message.
    texts: list[str]
    last_user_text: str
    last_turn: Turn
    tool_result: str = ""
    tools: list[Tool] = field(default_factory=list)
    tools_enabled: bool = True
    forced_tool: str | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    stream: bool = False
    include_usage: bool = False


@dataclass(slots=True)
class Reply:
    text: str
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_arguments: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def text_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def prompt_tokens(texts: list[str]) -> int:
    return sum(text_tokens(text) + PER_MESSAGE_TOKENS for text in texts)


def context_window(model: str) -> int:
    return SMALL_CONTEXT_WINDOW if "small-ctx" in model else DEFAULT_CONTEXT_WINDOW


def generate(conversation: Conversation, prompt: int) -> Reply:
    """The simulated model's reply; `prompt` is the already-counted prompt size."""
    tool = _tool_to_call(conversation)
    if tool is not None:
        arguments = orjson.dumps(sample_object(tool.schema)).decode()
        return Reply(
            text="",
            finish="tool",
            prompt_tokens=prompt,
            completion_tokens=text_tokens(tool.name + arguments),
            tool_name=tool.name,
            tool_arguments=arguments,
        )

    if conversation.last_turn == "tool":
        quoted = f"the tool returned {conversation.tool_result[:QUOTED_CHARS]}"
    else:
        quoted = conversation.last_user_text[:QUOTED_CHARS]
    text = f"Simulated {conversation.provider} {conversation.model} answer: {quoted}"
    if conversation.json_mode:
        text = _json_answer(conversation, text)

    finish: Finish = "stop"
    stop_sequence = None
    cut = _first_stop(text, conversation.stop)
    if cut is not None:
        text, stop_sequence, finish = text[: cut[0]], cut[1], "stop_sequence"
    completion = text_tokens(text)
    limit = conversation.max_tokens
    if limit is not None and completion > limit:
        text, completion, finish, stop_sequence = (
            text[: limit * CHARS_PER_TOKEN],
            limit,
            "length",
            None,
        )
    return Reply(
        text=text,
        finish=finish,
        prompt_tokens=prompt,
        completion_tokens=completion,
        stop_sequence=stop_sequence,
    )


# What a model says when it will not help; the gateway's refusal check knows the opening.
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


def poor_reply(reply: Reply, mode: str, text: str | None = None) -> Reply:
    """The reply a fault of the answering kind makes instead (a call that succeeds badly).

    refusal: a refusal; empty: no text at all; invalid_json: the JSON object cut off
    halfway (finish "stop": the model thought it was done); answer: exactly `text`.
    """
    if mode == "refusal":
        new = REFUSAL_TEXT
    elif mode == "empty":
        new = ""
    elif mode == "invalid_json":
        whole = reply.text
        if not whole.startswith("{"):
            whole = orjson.dumps({"answer": reply.text}).decode()
        new = whole[: len(whole) // 2]
    elif mode == "answer":
        new = text or ""
    else:
        return reply
    return Reply(
        text=new,
        finish="stop",
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=text_tokens(new) if new else 0,
    )


def _tool_to_call(conversation: Conversation) -> Tool | None:
    if not conversation.tools or not conversation.tools_enabled:
        return None
    if conversation.last_turn != "user":
        return None
    if conversation.forced_tool:
        for tool in conversation.tools:
            if tool.name == conversation.forced_tool:
                return tool
        return Tool(conversation.forced_tool, {})
    return conversation.tools[0]


def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return best


def _json_answer(conversation: Conversation, text: str) -> str:
    schema = conversation.json_schema
    if schema and schema.get("properties"):
        # Structured-output callers parse into their own model, so the object
        # must fit their schema; strict mode requires every property.
        value = sample_object(schema, every_property=True)
        for key, filler in (("answer", text), ("provider", conversation.provider)):
            if isinstance(value.get(key), str):
                value[key] = filler
    else:
        value = {"answer": text, "provider": conversation.provider}
    return orjson.dumps(value).decode()


def sample_object(schema: dict[str, Any], *, every_property: bool = False) -> dict[str, Any]:
    """An object that satisfies `schema`'s required properties (or all of them)."""
    properties = schema.get("properties") or {}
    names = properties.keys() if every_property else (schema.get("required") or [])
    return {
        name: sample_value(properties.get(name) or {}, every_property=every_property)
        for name in names
    }


def sample_value(schema: Any, *, every_property: bool = False) -> Any:
    if not isinstance(schema, dict):
        return "sample"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf", "any_of"):
        options = [o for o in schema.get(combinator) or [] if _type_of(o) != "null"]
        if options:
            return sample_value(options[0], every_property=every_property)
    kind = _type_of(schema)
    if kind == "object":
        return sample_object(schema, every_property=every_property)
    if kind == "array":
        items = schema.get("items")
        return [sample_value(items, every_property=every_property)] if items else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sample"


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind:
        # Gemini schemas spell types in upper case ("OBJECT").
        return str(kind).lower()
    return "object" if "properties" in schema else "string"


_WORD = re.compile(r"\S+\s*")


def stream_pieces(text: str, words_per_piece: int = 2) -> list[str]:
    """Split an answer into delta-sized pieces that join back to the exact text."""
    words = _WORD.findall(text)
    if not words:
        return [text] if text else []
    lead = text[: len(text) - len(text.lstrip())]
    pieces = [
        "".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)
    ]
    pieces[0] = lead + pieces[0]
    return pieces


def argument_pieces(arguments: str, parts: int = 3) -> list[str]:
    """Split tool-call JSON into fragments the way providers stream partial JSON."""
    size = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]
