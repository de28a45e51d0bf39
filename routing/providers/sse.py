"""An incremental Server-Sent Events decoder (the subset LLM providers use)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    data: bytes
    event: str | None = None


class SSEDecoder:
    """Feed raw bytes as they arrive; get whole events back.

    Handles events split across reads, CRLF line endings, comments (`: ping`)
    and multi-line `data:` fields (joined with newlines, per the spec).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return events
            line = self._buffer[:newline].rstrip(b"\r")
            self._buffer = self._buffer[newline + 1 :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def flush(self) -> list[SSEEvent]:
        """Events left when the body ends without a final blank line."""
        events = []
        if self._buffer:
            event = self._line(self._buffer.rstrip(b"\r"))
            self._buffer = b""
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEEvent(data=b"\n".join(self._data), event=self._event)
            self._event, self._data = None, []
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode()
        return None
