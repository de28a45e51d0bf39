"""Reading a batch submission and checking every request before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from project.errors import ApiError
from routing.batches import MAX_ITEMS
from routing.models import ClientKey
from routing.schema import validate_chat_body
from routing.table import RoutingTable, build_table

# Errors listed in a refusal; the message says how many there were in all.
ERRORS_SHOWN = 20
CUSTOM_ID_MAX = 64
CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based: the line of a JSONL body, or the position in a JSON list
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "param": self.param, "message": self.message}


@dataclass(frozen=True)
class Unreadable:
    """A JSONL line that is not JSON."""

    message: str


class InvalidBatch(Exception):
    """Some requests of a submission are invalid; nothing was stored."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"{len(errors)} request(s) of the batch are invalid: {shown}{more}")


@dataclass(frozen=True)
class Entry:
    custom_id: str
    request: dict[str, Any]


def parse_jsonl(raw: bytes) -> list[tuple[int, Any]]:
    """(line number, value) for every non-blank line; a line that is not JSON is `Unreadable`."""
    lines: list[tuple[int, Any]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            lines.append((number, Unreadable(f"not valid JSON: {exc}")))
    return lines


def numbered(values: list[Any]) -> list[tuple[int, Any]]:
    """A JSON list's requests, numbered from 1 like lines."""
    return list(enumerate(values, start=1))


def check_size(count: int) -> None:
    if count > MAX_ITEMS:
        raise ApiError(
            413,
            f"A batch takes at most {MAX_ITEMS:,} requests; this one has {count:,}. "
            "Split it into several batches.",
            "batch_too_large",
        )
    if count == 0:
        raise ApiError(400, "The batch has no requests.", "empty_batch")


class BadLine(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def check_requests(lines: list[tuple[int, Any]], key: ClientKey, route: str = "") -> list[Entry]:
    """Every request checked before anything is stored: raises InvalidBatch naming the lines.

    A line is a chat request (`model`, `messages`, ...; `custom_id` optional) or
    OpenAI's batch line (`{"custom_id", "method", "url", "body"}`). `route`,
    when given, replaces every request's model. A model the key cannot reach
    (unknown, another environment's, outside its `allowed_models`) is an error
    of its line, found now rather than 10,000 times by the worker.
    """
    check_size(len(lines))
    table = build_table(0)
    if route and (refused := unreachable(table, key, route)):
        raise ApiError(400, refused, "model_not_found", param="route")
    entries: list[Entry] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, value in lines:
        try:
            entry = parse_entry(value, route)
            if not route and (refused := unreachable(table, key, entry.request["model"])):
                raise BadLine(refused, "model")
            if entry.custom_id in seen:
                raise BadLine(
                    f"custom_id '{entry.custom_id}' is already used on line "
                    f"{seen[entry.custom_id]}.",
                    "custom_id",
                )
        except (BadLine, ApiError) as error:
            errors.append(LineError(number, error.message, error.param))
            continue
        if entry.custom_id:
            seen[entry.custom_id] = number
        entries.append(entry)
    if errors:
        raise InvalidBatch(errors)
    return entries


def parse_entry(value: Any, route: str = "") -> Entry:
    if isinstance(value, Unreadable):
        raise BadLine(value.message)
    if not isinstance(value, dict):
        raise BadLine("must be a JSON object: a chat request.")
    if "body" in value:  # OpenAI's batch line: {"custom_id", "method", "url", "body"}
        if value.get("url", CHAT_URL) != CHAT_URL:
            raise BadLine(f"'url' must be {CHAT_URL}.", "url")
        if value.get("method", "POST") != "POST":
            raise BadLine("'method' must be POST.", "method")
        body = value["body"]
        if not isinstance(body, dict):
            raise BadLine("'body' must be a chat request object.", "body")
    else:
        body = {k: v for k, v in value.items() if k != "custom_id"}
    custom_id = value.get("custom_id") or ""
    if not isinstance(custom_id, str) or len(custom_id) > CUSTOM_ID_MAX:
        raise BadLine(
            f"'custom_id' must be a string of at most {CUSTOM_ID_MAX} characters.", "custom_id"
        )
    if body.get("stream"):
        raise BadLine("A batch answers with whole completions: 'stream' must be false.", "stream")
    validate_chat_body({**body, "model": route} if route else body)
    return Entry(custom_id, body)


def unreachable(table: RoutingTable, key: ClientKey, model: str) -> str:
    """Why the key cannot send requests to ``model``, or "" when it can."""
    if key.allowed_models and model not in key.allowed_models:
        return f"This key may not use '{model}'; it is limited to {', '.join(key.allowed_models)}."
    if table.resolve(model, key.environment) is None:
        return (
            f"'{model}' is neither a route nor a model available to {key.environment} keys. "
            "GET /v1/models lists what this key can use."
        )
    return ""
