"""uvicorn's httptools protocol, writing each turn of the event loop's output at once.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two
``send()`` system calls for one small answer, and the client woken twice. On a
gateway that answers in about a millisecond those wake-ups are a real share of the
time a request takes (bench/RESULTS.md). Here every write made during one turn of
the event loop goes out as one, at the end of that turn: a whole response in one
``send()``, and stream frames that arrive together in one too.

Run uvicorn with ``--http project.server:GatewayHttpProtocol`` (``make run``, the
deploy recipes and the benchmarks do).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop are sent as one.

    Everything but `write` and `close` goes to the real transport; `close` sends
    what is waiting first.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = loop

    def write(self, data: bytes) -> None:
        if self._pending:
            self._pending.append(data)
        else:
            self._pending = [data]
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]
