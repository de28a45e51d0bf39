"""Gemini generateContent / streamGenerateContent (Google AI, v1beta)."""

from __future__ import annotations

from typing import Any

import orjson

from routing.simulator.engine import (
    Conversation,
    Reply,
    Tool,
    Turn,
    new_id,
    prompt_tokens,
    stream_pieces,
)
from routing.simulator.wire import Failure, Headers, Provider, Request, StreamPlan

JSON_UTF8 = (b"content-type", b"application/json; charset=UTF-8")
SSE_PLAIN = (b"content-type", b"text/event-stream")
FINISH_REASONS = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
GOOGLE_MODELS = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 1_048_576, 8_192),
)
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count"
_KEY_INVALID = "API key not valid. Please pass a valid API key."
_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _model_resource(model: str, name: str, context: int, output: int) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": name,
        "description": f"{name} served through the simulator.",
        "inputTokenLimit": context,
        "outputTokenLimit": output,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
    }


_MODEL_RESOURCES = {model[0]: _model_resource(*model) for model in GOOGLE_MODELS}
_MODEL_LIST = orjson.dumps({"models": list(_MODEL_RESOURCES.values())})


def _either(value: dict[str, Any], camel: str, snake: str) -> Any:
    # Google's JSON mapping accepts both spellings of every field.
    found = value.get(camel)
    return value.get(snake) if found is None else found


def _retry_delay(seconds: float) -> str:
    return f"{seconds:g}s"


class GoogleProvider(Provider):
    name = "google"
    json_type = JSON_UTF8

    def fail(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: Headers | None = None,
    ) -> Failure:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
        }
        if details:
            error["details"] = details
        return Failure(status, orjson.dumps({"error": error}), headers)

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> Failure:
        text = message or _MESSAGES.get(status) or "Request failed."
        details = None
        headers: Headers = []
        if retry_after is not None:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": _retry_delay(retry_after),
                }
            ]
            headers = [(b"retry-after", f"{retry_after:g}".encode())]
        return self.fail(status, text, details, headers)

    def out_of_credit(self) -> Failure:
        return self.fail(
            429,
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": _QUOTA_METRIC,
                            "quotaId": "GenerateContentPaidTierInputTokensPerModelPerDay",
                        }
                    ],
                }
            ],
        )

    def model_not_found(self, model: str) -> Failure:
        return self.fail(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        )

    def context_exceeded(self, model: str, prompt: int, window: int) -> Failure:
        return self.fail(
            400, f"The input token count exceeds the maximum number of tokens allowed ({window})."
        )

    def model_of(self, request: Request, payload: Any) -> str:
        return request.path_model or ""

    def is_stream(self, request: Request, payload: Any) -> bool:
        return request.stream_path

    def authenticate(self, request: Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        if not key:
            raise self.fail(403, _NO_KEY)
        if key.startswith("invalid"):
            raise self.fail(
                400,
                _KEY_INVALID,
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": _KEY_INVALID,
                    },
                ],
            )

    def parse(self, request: Request, payload: Any) -> Conversation:
        if not isinstance(payload, dict):
            raise self.fail(400, "Invalid JSON payload received.")
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents:
            raise self.fail(400, "* GenerateContentRequest.contents: contents is not specified\n")

        texts: list[str] = []
        system = _either(payload, "systemInstruction", "system_instruction")
        if isinstance(system, dict):
            texts.append(_parts_text(system.get("parts"))[0])
        elif isinstance(system, str):
            texts.append(system)
        last_user_text = ""
        for content in contents:
            if not isinstance(content, dict):
                raise self.fail(400, "Invalid value at 'contents'.")
            role = content.get("role") or "user"
            if role not in ("user", "model", "function", "tool"):
                raise self.fail(400, "Please use a valid role: user, model.")
            text, responses = _parts_text(content.get("parts"))
            texts.append(text)
            if role == "user" and not responses:
                last_user_text = text
        last = contents[-1]
        last_text, last_responses = _parts_text(last.get("parts"))
        last_turn: Turn = "user"
        if last_responses:
            last_turn = "tool"
        elif last.get("role") == "model":
            last_turn = "assistant"

        config = _either(payload, "generationConfig", "generation_config") or {}
        max_tokens = _either(config, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise self.fail(400, "Invalid value at 'generation_config.max_output_tokens'.")
        mime = _either(config, "responseMimeType", "response_mime_type")
        schema = _either(config, "responseJsonSchema", "response_json_schema") or _either(
            config, "responseSchema", "response_schema"
        )

        tools: list[Tool] = []
        for tool in payload.get("tools") or []:
            for declaration in _either(tool, "functionDeclarations", "function_declarations") or []:
                if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                    parameters = declaration.get("parameters") or _either(
                        declaration, "parametersJsonSchema", "parameters_json_schema"
                    )
                    tools.append(Tool(declaration["name"], parameters or {}))
        tool_config = _either(payload, "toolConfig", "tool_config") or {}
        calling = _either(tool_config, "functionCallingConfig", "function_calling_config") or {}
        mode = str(calling.get("mode", "AUTO")).upper()
        allowed = _either(calling, "allowedFunctionNames", "allowed_function_names") or []
        stops = _either(config, "stopSequences", "stop_sequences") or []

        return Conversation(
            provider=self.name,
            model=request.path_model or "",
            texts=texts,
            last_user_text=last_user_text,
            last_turn=last_turn,
            tool_result=last_text if last_responses else "",
            tools=tools,
            tools_enabled=mode != "NONE",
            forced_tool=allowed[0] if mode == "ANY" and allowed else None,
            max_tokens=max_tokens,
            stop=[s for s in stops if isinstance(s, str)],
            json_mode=mime == "application/json",
            json_schema=schema if isinstance(schema, dict) else None,
            stream=request.stream_path,
        )

    def success_headers(self, request: Request, reply: Reply) -> Headers:
        return [(b"server-timing", b"gfet4t7; dur=1"), (b"vary", b"Origin, X-Origin, Referer")]

    def respond(
        self, request: Request, conversation: Conversation, reply: Reply
    ) -> tuple[bytes, Headers]:
        return orjson.dumps(self._response(conversation, reply)), self.success_headers(
            request, reply
        )

    def stream(self, request: Request, conversation: Conversation, reply: Reply) -> StreamPlan:
        if reply.tool_name:
            # Gemini sends a function call whole, in one chunk.
            chunks = [self._response(conversation, reply)]
        else:
            chunks = []
            pieces = stream_pieces(reply.text) or [""]
            response_id = new_id()
            written = ""
            for index, piece in enumerate(pieces):
                written += piece
                last = index == len(pieces) - 1
                completion = reply.completion_tokens if last else max(1, len(written) // 4)
                candidate: dict[str, Any] = {
                    "content": {"parts": [{"text": piece}], "role": "model"},
                    "index": 0,
                }
                if last:
                    candidate["finishReason"] = FINISH_REASONS[reply.finish]
                chunks.append(
                    {
                        "candidates": [candidate],
                        "usageMetadata": _usage(reply.prompt_tokens, completion),
                        "modelVersion": conversation.model,
                        "responseId": response_id,
                    }
                )
        encoded = [orjson.dumps(chunk) for chunk in chunks]
        headers = self.success_headers(request, reply)
        if request.sse:
            events = [b"data: " + chunk + b"\r\n\r\n" for chunk in encoded]
            # The finishing chunk is the tail so a stream_cut never delivers it.
            return StreamPlan([], events[:-1], events[-1:], headers, SSE_PLAIN)
        # Without alt=sse Gemini streams one JSON array, element by element.
        events = [(b"[" if i == 0 else b",\r\n") + chunk for i, chunk in enumerate(encoded)]
        return StreamPlan([], events[:-1], [events[-1], b"]"], headers, JSON_UTF8)

    def malformed_event(self, request: Request) -> bytes:
        return b"data: {this is not json\r\n\r\n" if request.sse else b"[{this is not json"

    def models(self) -> bytes:
        return _MODEL_LIST

    def count_tokens(self, request: Request, payload: Any) -> bytes:
        inner = payload.get("generateContentRequest") if isinstance(payload, dict) else None
        total = prompt_tokens(self.parse(request, inner or payload).texts)
        details = [{"modality": "TEXT", "tokenCount": total}]
        return orjson.dumps({"totalTokens": total, "promptTokensDetails": details})

    def model_resource(self, model: str) -> bytes | None:
        resource = _MODEL_RESOURCES.get(model.removeprefix("models/"))
        return orjson.dumps(resource) if resource else None

    def _response(self, conversation: Conversation, reply: Reply) -> dict[str, Any]:
        if reply.tool_name:
            part: dict[str, Any] = {
                "functionCall": {
                    "name": reply.tool_name,
                    "args": orjson.loads(reply.tool_arguments),
                }
            }
        else:
            part = {"text": reply.text}
        return {
            "candidates": [
                {
                    "content": {"parts": [part], "role": "model"},
                    "finishReason": FINISH_REASONS[reply.finish],
                    "index": 0,
                }
            ],
            "usageMetadata": _usage(reply.prompt_tokens, reply.completion_tokens),
            "modelVersion": conversation.model,
            "responseId": new_id(),
        }


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _parts_text(parts: Any) -> tuple[str, bool]:
    """Text of a content's parts, and whether any part is a function response."""
    if not isinstance(parts, list):
        return "", False
    texts = []
    responses = False
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
            continue
        call = _either(part, "functionCall", "function_call")
        if isinstance(call, dict):
            texts.append(orjson.dumps(call.get("args") or {}).decode())
            continue
        response = _either(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            responses = True
            texts.append(orjson.dumps(response.get("response") or {}).decode())
    return "".join(texts), responses
