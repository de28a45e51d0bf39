"""AIMLAPI: the OpenAI protocol with AIMLAPI's error body, cost headers and catalogue."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from routing.simulator.engine import Reply, new_id
from routing.simulator.openai_wire import OpenAIProvider, bearer, seconds_header
from routing.simulator.wire import Failure, Headers, Request

# 2,000,000 credits buy one USD; these prices are $1 and $2 per million tokens.
CREDITS_PER_USD = 2_000_000
CREDITS_PER_PROMPT_TOKEN = 2
CREDITS_PER_COMPLETION_TOKEN = 4
OUT_OF_CREDITS = (
    "You've run out of credits. Please top up your balance or update your payment method to "
    "continue: https://aimlapi.com/app/billing/"
)
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_AIMLAPI_MESSAGES = {
    400: "Body validation error!",
    401: (
        "This request requires a valid API key. You can create a new API key on the Billing "
        "page: https://aimlapi.com/app/keys"
    ),
    403: OUT_OF_CREDITS,
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Generation timeout",
}

# (id, name, developer, context length, max output tokens)
AIMLAPI_MODELS = (
    ("gpt-4o", "GPT-4o", "Open AI", 128_000, 16_384),
    ("gpt-4o-mini", "GPT-4o mini", "Open AI", 128_000, 16_384),
    ("openai/gpt-4.1-2025-04-14", "GPT-4.1", "Open AI", 1_047_576, 32_768),
    ("anthropic/claude-sonnet-4.5", "Claude 4.5 Sonnet", "Anthropic", 200_000, 64_000),
    ("claude-sonnet-4-5-20250929", "Claude 4.5 Sonnet", "Anthropic", 200_000, 64_000),
    ("google/gemini-2.5-flash", "Gemini 2.5 Flash", "Google", 1_048_576, 65_536),
    ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "Llama 3.3 70B", "Meta", 128_000, 4_096),
    ("deepseek/deepseek-chat", "DeepSeek V3", "DeepSeek", 128_000, 8_192),
    ("mistralai/mistral-nemo", "Mistral Nemo", "Mistral AI", 128_000, 4_096),
)
_AIMLAPI_FEATURES = [
    "openai/chat-completion",
    "openai/chat-completion.function",
    "openai/chat-completion.message.system",
    "openai/chat-completion.message.assistant",
    "openai/chat-completion.stream",
    "openai/chat-completion.max-completion-tokens",
    "openai/chat-completion.response-format",
]
_AIMLAPI_CATALOGUE = orjson.dumps(
    [
        {
            "id": model_id,
            "type": "chat-completion",
            "info": {
                "name": name,
                "developer": developer,
                "description": f"{name} served through the simulator.",
                "contextLength": context,
                "maxTokens": max_tokens,
                "url": "https://aimlapi.com/models",
                "docs_url": "https://docs.aimlapi.com/",
            },
            "features": _AIMLAPI_FEATURES,
            "endpoints": ["/v1/chat/completions"],
        }
        for model_id, name, developer, context, max_tokens in AIMLAPI_MODELS
    ]
)
_AIMLAPI_MODEL_LIST = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": model[0], "object": "model", "created": 1715367049, "owned_by": "aimlapi"}
            for model in AIMLAPI_MODELS
        ],
    }
)


def credits_for(reply: Reply) -> int:
    return (
        reply.prompt_tokens * CREDITS_PER_PROMPT_TOKEN
        + reply.completion_tokens * CREDITS_PER_COMPLETION_TOKEN
    )


class AimlapiProvider(OpenAIProvider):
    name = "aimlapi"
    error_path = "/v1/chat/completions"

    def fail(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Headers | None = None,
    ) -> Failure:
        body = {
            "message": message,
            "path": self.error_path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        return Failure(status, orjson.dumps(body), headers)

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> Failure:
        text = (
            message
            or _AIMLAPI_MESSAGES.get(status)
            or (
                "Something wrong with the server. Please, try again later."
                if status >= 500
                else "Bad Request"
            )
        )
        headers = [] if retry_after is None else [(b"retry-after", seconds_header(retry_after))]
        return self.fail(status, text, headers=headers)

    def rate_limited(self, model: str, retry_after: float) -> Failure:
        return self.error(429, retry_after=retry_after)

    def out_of_credit(self) -> Failure:
        return self.fail(403, OUT_OF_CREDITS)

    def model_not_found(self, model: str) -> Failure:
        return self.fail(404, f"Model {model} not found")

    def authenticate(self, request: Request) -> None:
        key = bearer(request.headers)
        if not key or key.startswith("invalid"):
            raise self.error(401)

    def transport_headers(self, request: Request) -> Headers:
        headers = [(b"x-inference-id", new_id().encode())]
        client_id = request.headers.get("x-client-request-id")
        # AIMLAPI silently drops ids outside its alphabet rather than failing.
        if client_id and _CLIENT_REQUEST_ID.fullmatch(client_id):
            headers.append((b"x-client-request-id", client_id.encode()))
        return headers

    def success_headers(self, request: Request, reply: Reply) -> Headers:
        credits = credits_for(reply)
        return [
            *self.transport_headers(request),
            (b"x-aimlapi-credits-used", b"%d" % credits),
            (b"x-aimlapi-usd-spent", f"{credits / CREDITS_PER_USD:.9f}".encode()),
        ]

    def stream_headers(self, request: Request, reply: Reply) -> Headers:
        # Headers leave before the last token, so AIMLAPI cannot price a stream in them.
        return self.transport_headers(request)

    def decorate_last_chunk(self, chunk: dict[str, Any], reply: Reply) -> None:
        credits = credits_for(reply)
        chunk["meta"] = {"usage": {"credits_used": credits, "usd_spent": credits / CREDITS_PER_USD}}

    def models(self) -> bytes:
        return _AIMLAPI_MODEL_LIST

    def catalogue(self) -> bytes:
        return _AIMLAPI_CATALOGUE
