"""OpenAI Chat Completions, and AIMLAPI, which speaks it with its own errors and cost headers."""

from __future__ import annotations

from typing import Any

import orjson

from routing.simulator.engine import (
    Conversation,
    Reply,
    Tool,
    Turn,
    argument_pieces,
    new_id,
    now,
    stream_pieces,
)
from routing.simulator.wire import Failure, Headers, Provider, Request, StreamPlan

FINGERPRINT = "fp_simulator"
REQUESTS_LIMIT = 10_000
TOKENS_LIMIT = 30_000_000
FINISH_REASONS = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}
DONE = b"data: [DONE]\n\n"

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini")

# status: (type, code, message) for errors the error fault can ask for.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    409: ("invalid_request_error", None, "The request conflicts with another request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: (
        "service_unavailable_error",
        "server_is_overloaded",
        "The server is overloaded or not ready yet.",
    ),
    504: ("server_error", None, "Gateway timeout."),
}


def sse(value: Any) -> bytes:
    return b"data: " + orjson.dumps(value) + b"\n\n"


def bearer(headers: dict[str, str]) -> str:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class OpenAIProvider(Provider):
    name = "openai"

    # -- errors ---------------------------------------------------------------

    def fail(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Headers | None = None,
    ) -> Failure:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return Failure(status, orjson.dumps(body), headers)

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> Failure:
        default = (
            ("invalid_request_error", None, "Request failed.")
            if status < 500
            else (
                "server_error",
                None,
                "The server had an error while processing your request.",
            )
        )
        kind, code, text = _OPENAI_ERRORS.get(status, default)
        headers = [] if retry_after is None else [(b"retry-after", seconds_header(retry_after))]
        return self.fail(status, message or text, kind, None, code, headers)

    def rate_limited(self, model: str, retry_after: float) -> Failure:
        message = (
            f"Rate limit reached for {model or 'this model'} in organization org-simulator on "
            f"requests per min (RPM): Limit {REQUESTS_LIMIT}, Used {REQUESTS_LIMIT}, Requested 1. "
            f"Please try again in {retry_after:g}s."
        )
        headers = [
            (b"retry-after", seconds_header(retry_after)),
            (b"x-ratelimit-limit-requests", b"%d" % REQUESTS_LIMIT),
            (b"x-ratelimit-remaining-requests", b"0"),
            (b"x-ratelimit-reset-requests", f"{retry_after:g}s".encode()),
        ]
        return self.fail(429, message, "requests", None, "rate_limit_exceeded", headers)

    def out_of_credit(self) -> Failure:
        message = (
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        return self.fail(429, message, "insufficient_quota", None, "insufficient_quota")

    def model_not_found(self, model: str) -> Failure:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.fail(404, message, "invalid_request_error", None, "model_not_found")

    def context_exceeded(self, model: str, prompt: int, window: int) -> Failure:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt} tokens. Please reduce the length of the messages."
        )
        return self.fail(
            400, message, "invalid_request_error", "messages", "context_length_exceeded"
        )

    # -- requests -------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        key = bearer(request.headers)
        if not key:
            raise self.fail(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password.",
            )
        if key.startswith("invalid"):
            raise self.fail(
                401,
                f"Incorrect API key provided: {key[:8]}****. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def parse(self, request: Request, payload: Any) -> Conversation:
        if not isinstance(payload, dict):
            raise self.fail(400, "We could not parse the JSON body of your request.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise self.fail(400, "you must provide a model parameter")
        messages = payload.get("messages")
        if messages is None:
            raise self.fail(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            raise self.fail(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )

        texts: list[str] = []
        last_user_text = ""
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise self.fail(
                    400,
                    f"Missing required parameter: 'messages[{index}].role'.",
                    param=f"messages[{index}].role",
                    code="missing_required_parameter",
                )
            text = _content_text(message.get("content"))
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    text += str(call["function"].get("arguments", ""))
            texts.append(text)
            if message["role"] == "user":
                last_user_text = text
        last_role = messages[-1]["role"]
        last_turn: Turn = "assistant"
        if last_role in ("tool", "function"):
            last_turn = "tool"
        elif last_role == "user":
            last_turn = "user"

        tools = [
            Tool(tool["function"]["name"], tool["function"].get("parameters") or {})
            for tool in payload.get("tools") or []
            if isinstance(tool, dict)
            and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str)
        ]
        choice = payload.get("tool_choice")
        forced = None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            forced = choice["function"].get("name")

        max_tokens = payload.get("max_completion_tokens")
        limit_name = "max_completion_tokens"
        if max_tokens is None:
            max_tokens, limit_name = payload.get("max_tokens"), "max_tokens"
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise self.fail(
                400,
                f"Invalid '{limit_name}': integer below minimum value. Expected a value >= 1, "
                f"but got {max_tokens!r} instead.",
                param=limit_name,
                code="integer_below_min_value",
            )

        stop = payload.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]

        response_format = payload.get("response_format")
        if not isinstance(response_format, dict):
            response_format = {}
        format_type = response_format.get("type")
        json_schema = response_format.get("json_schema")
        schema = json_schema.get("schema") if isinstance(json_schema, dict) else None

        stream = payload.get("stream") is True
        options = payload.get("stream_options")
        if options is not None and not stream:
            raise self.fail(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        return Conversation(
            provider=self.name,
            model=model,
            texts=texts,
            last_user_text=last_user_text,
            last_turn=last_turn,
            tool_result=texts[-1] if last_turn == "tool" else "",
            tools=tools,
            tools_enabled=choice != "none",
            forced_tool=forced,
            max_tokens=max_tokens,
            stop=stops,
            json_mode=format_type in ("json_object", "json_schema"),
            json_schema=schema if isinstance(schema, dict) else None,
            stream=stream,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    # -- responses ------------------------------------------------------------

    def transport_headers(self, request: Request) -> Headers:
        return [(b"x-request-id", f"req_{new_id()}".encode())]

    def success_headers(self, request: Request, reply: Reply) -> Headers:
        return [
            *self.transport_headers(request),
            (b"openai-processing-ms", b"1"),
            (b"openai-version", b"2020-10-01"),
            (b"x-ratelimit-limit-requests", b"%d" % REQUESTS_LIMIT),
            (b"x-ratelimit-limit-tokens", b"%d" % TOKENS_LIMIT),
            (b"x-ratelimit-remaining-requests", b"%d" % (REQUESTS_LIMIT - 1)),
            (b"x-ratelimit-remaining-tokens", b"%d" % (TOKENS_LIMIT - reply.prompt_tokens)),
            (b"x-ratelimit-reset-requests", b"6ms"),
            (b"x-ratelimit-reset-tokens", b"0s"),
        ]

    def respond(
        self, request: Request, conversation: Conversation, reply: Reply
    ) -> tuple[bytes, Headers]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if reply.tool_name else reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_name:
            message["tool_calls"] = [
                {
                    "id": f"call_{new_id()}",
                    "type": "function",
                    "function": {"name": reply.tool_name, "arguments": reply.tool_arguments},
                }
            ]
        body = {
            "id": f"chatcmpl-{new_id()}",
            "object": "chat.completion",
            "created": now(),
            "model": conversation.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": FINISH_REASONS[reply.finish],
                }
            ],
            "usage": _usage(reply),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return orjson.dumps(body), self.success_headers(request, reply)

    def stream(self, request: Request, conversation: Conversation, reply: Reply) -> StreamPlan:
        base = {
            "id": f"chatcmpl-{new_id()}",
            "object": "chat.completion.chunk",
            "created": now(),
            "model": conversation.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        if conversation.include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        if reply.tool_name:
            opening = {"index": 0, "id": f"call_{new_id()}", "type": "function"}
            head = chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {**opening, "function": {"name": reply.tool_name, "arguments": ""}}
                    ],
                    "refusal": None,
                }
            )
            content = [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in argument_pieces(reply.tool_arguments)
            ]
        else:
            head = chunk({"role": "assistant", "content": "", "refusal": None})
            content = [chunk({"content": piece}) for piece in stream_pieces(reply.text)]
        final = [chunk({}, FINISH_REASONS[reply.finish])]
        if conversation.include_usage:
            final.append({**base, "choices": [], "usage": _usage(reply)})
        self.decorate_last_chunk(final[-1], reply)
        return StreamPlan(
            head=[sse(head)],
            content=[sse(c) for c in content],
            tail=[*(sse(c) for c in final), DONE],
            headers=self.stream_headers(request, reply),
        )

    def nearly_spent(self, headers: Headers, reset_seconds: float) -> Headers:
        return nearly_spent_headers(headers, reset_seconds)

    def stream_headers(self, request: Request, reply: Reply) -> Headers:
        return self.success_headers(request, reply)

    def decorate_last_chunk(self, chunk: dict[str, Any], reply: Reply) -> None:
        """Hook for AIMLAPI, which reports cost in the stream's final chunk."""

    def models(self) -> bytes:
        return _MODEL_LIST


_MODEL_LIST = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}
            for model in OPENAI_MODELS
        ],
    }
)


def nearly_spent_headers(headers: Headers, reset_seconds: float) -> Headers:
    spent = {
        b"x-ratelimit-remaining-requests": b"1",
        b"x-ratelimit-reset-requests": f"{reset_seconds:g}s".encode(),
    }
    return [(name, spent.get(name, value)) for name, value in headers]


def seconds_header(value: float) -> bytes:
    return f"{value:g}".encode()
