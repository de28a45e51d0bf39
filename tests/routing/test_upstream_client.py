"""The lean upstream client (routing/upstream.py) against real sockets.

Each test runs a small HTTP server on loopback that behaves as a provider can:
chunked bodies, closing after an answer, going quiet, hanging up mid-body, TLS.
The engine-level behaviour (fallback, retries, streams through the gateway) is
covered by the rest of the suite, which runs on this client by default.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from routing import upstream
from routing.http import transport_error
from routing.simulator.tls import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


@asynccontextmanager
async def provider(
    handler: Handler, server: Server, tls: ssl.SSLContext | None = None, limit: int = 512
) -> AsyncIterator[tuple[str, upstream.Client]]:
    """A provider on loopback answering with ``handler``, and a client to call it; both
    closed at the end."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(connected, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    client = upstream.Client(limit_per_origin=limit)
    try:
        yield f"{scheme}://127.0.0.1:{port}/v1/chat/completions", client
    finally:
        await client.aclose()
        listening.close()


def answering(server: Server, body: bytes = b'{"ok": true}', close: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            extra = b"Connection: close\r\n" if close else b""
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"X-Ratelimit-Remaining-Requests: 9\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                + extra
                + b"Content-Length: %d\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
            if close:
                return

    return handle


async def call(
    client: upstream.Client, url: str, read_timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    connection, response = await client.request(
        "POST", url, {"Content-Type": "application/json"}, b'{"q": 1}', 2.0, read_timeout
    )
    try:
        return response.status, response.headers, await response.read()
    finally:
        client.done(connection)


def test_calls_to_one_origin_reuse_one_kept_alive_connection() -> None:
    server = Server()

    async def scenario() -> tuple[str, list[tuple[int, dict[str, str], bytes]]]:
        async with provider(answering(server), server) as (url, client):
            return url, [await call(client, url) for _ in range(5)]

    url, answers = asyncio.run(scenario())
    assert [a[0] for a in answers] == [200] * 5
    assert answers[0][2] == b'{"ok": true}'
    assert server.connections == 1
    head = server.requests[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{url.split(':')[2].split('/')[0]}" in head
    assert "Content-Length: 8" in head and server.requests[0].endswith(b'{"q": 1}')


def test_response_headers_are_lower_case_and_repeated_ones_are_joined() -> None:
    server = Server()

    async def scenario() -> dict[str, str]:
        async with provider(answering(server), server) as (url, client):
            return (await call(client, url))[1]

    headers = asyncio.run(scenario())
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["set-cookie"] == "a=1, b=2"


def test_a_chunked_body_arrives_without_its_framing_piece_by_piece() -> None:
    server = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for event in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await server.read_request(reader)  # the connection stays usable

    async def scenario() -> list[bytes]:
        async with provider(handle, server) as (url, client):
            connection, response = await client.request("POST", url, {}, b"{}", 2.0, 5.0)
            pieces = [piece async for piece in response.iter_chunks()]
            client.done(connection)
            assert connection in connection.pool.idle
            return pieces

    pieces = asyncio.run(scenario())
    assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert len(pieces) == 3  # each as it came, not buffered to the end


def test_a_provider_that_closes_after_answering_gets_a_new_connection_next_time() -> None:
    server = Server()

    async def scenario() -> list[int]:
        async with provider(answering(server, close=True), server) as (url, client):
            return [(await call(client, url))[0] for _ in range(2)]

    assert asyncio.run(scenario()) == [200, 200]
    assert server.connections == 2


def test_a_provider_that_goes_quiet_times_out_after_the_read_timeout() -> None:
    server = Server()

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    async def scenario() -> float:
        async with provider(quiet, server) as (url, client):
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError) as raised:
                await call(client, url, read_timeout=0.3)
            assert transport_error(raised.value).code == "timeout"
            return asyncio.get_running_loop().time() - started

    assert 0.3 <= asyncio.run(scenario()) < 1.5


def test_a_refused_connection_is_a_connect_failure() -> None:
    async def scenario() -> None:
        async with provider(answering(Server()), Server()) as (url, _):
            pass  # the provider is gone: nothing listens on its port now
        client = upstream.Client()
        with pytest.raises(upstream.ConnectFailed) as raised:
            await call(client, url)
        assert transport_error(raised.value).code == "connect"

    asyncio.run(scenario())


def test_a_provider_that_hangs_up_mid_body_is_a_disconnection_and_the_connection_is_dropped() -> (
    None
):
    server = Server()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await writer.drain()

    async def scenario() -> None:
        async with provider(cut, server) as (url, client):
            with pytest.raises(upstream.Disconnected) as raised:
                await call(client, url)
            assert transport_error(raised.value).code == "connection"
            pool = next(iter(client._pools.values()))
            assert pool.idle == [] and pool.open == 0

    asyncio.run(scenario())


def test_a_body_left_unread_closes_its_connection_instead_of_reusing_it() -> None:
    server = Server()

    async def scenario() -> bytes:
        async with provider(answering(server, body=b"x" * 200_000), server) as (url, client):
            connection, _ = await client.request("POST", url, {}, b"{}", 2.0, 5.0)
            client.done(connection)  # the caller gave up on the body
            return (await call(client, url))[2]

    assert asyncio.run(scenario()) == b"x" * 200_000
    assert server.connections == 2


def test_at_its_cap_a_call_waits_for_a_connection_to_come_back() -> None:
    server = Server()

    async def scenario() -> list[int]:
        async with provider(answering(server), server, limit=1) as (url, client):
            answers = await asyncio.gather(*(call(client, url) for _ in range(4)))
            return [answer[0] for answer in answers]

    assert asyncio.run(scenario()) == [200] * 4
    assert server.connections == 1


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_https_verifies_the_providers_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    key_file, cert_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    server = Server()

    async def scenario() -> None:
        async with provider(answering(server), server, tls=tls) as (url, client):
            if trusted:
                assert [(await call(client, url))[0] for _ in range(2)] == [200, 200]
            else:
                with pytest.raises(upstream.ConnectFailed):
                    await call(client, url)

    asyncio.run(scenario())
    if trusted:
        assert server.connections == 1  # the TLS connection is kept alive too


def test_a_header_that_cannot_be_sent_fails_before_taking_a_connection() -> None:
    server = Server()

    async def scenario() -> int:
        async with provider(answering(server), server, limit=1) as (url, client):
            for value in ("sk-\u20ac", "sk-1\r\nX-Injected: 1", "sk-1\n"):
                with pytest.raises(ValueError):
                    await client.request("POST", url, {"Authorization": value}, b"{}", 2.0, 5.0)
            # The pool's one slot was not kept by the failed calls.
            return (await asyncio.wait_for(call(client, url), 1.0))[0]

    assert asyncio.run(scenario()) == 200
    assert not any(b"X-Injected" in request for request in server.requests)


def test_a_woken_waiter_that_gives_up_passes_the_connection_on() -> None:
    server = Server()

    async def scenario() -> int:
        async with provider(answering(server), server, limit=1) as (url, client):
            connection, response = await client.request("POST", url, {}, b"{}", 2.0, 5.0)
            await response.read()
            first = asyncio.create_task(call(client, url))
            second = asyncio.create_task(call(client, url))
            await asyncio.sleep(0.05)  # both wait for the one connection
            client.done(connection)  # wakes the first...
            first.cancel()  # ...whose caller gives up before it runs
            return (await asyncio.wait_for(second, 1.0))[0]

    assert asyncio.run(scenario()) == 200


def test_an_interim_response_is_skipped_for_the_final_one() -> None:
    server = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in (b"first", b"second"):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        await asyncio.sleep(1)

    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        async with provider(handle, server) as (url, client):
            return [await call(client, url) for _ in range(2)]

    answers = asyncio.run(scenario())
    assert [(status, body) for status, _, body in answers] == [(200, b"first"), (200, b"second")]
    assert "link" not in answers[0][1]


def test_a_body_that_ends_when_the_provider_closes_is_whole() -> None:
    server = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok":')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b" true}")
        await writer.drain()

    async def scenario() -> bytes:
        async with provider(handle, server) as (url, client):
            return (await call(client, url))[2]

    assert asyncio.run(scenario()) == b'{"ok": true}'


def test_an_ipv6_origin_keeps_its_brackets_in_the_host_header() -> None:
    assert upstream._origin("http://[::1]:8080/v1")[2] == b"[::1]:8080"
    assert upstream._origin("https://[::1]/v1")[2] == b"[::1]"


def test_a_connection_idle_too_long_is_closed_rather_than_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "IDLE_SECONDS", 0.2)
    server = Server()

    async def scenario() -> list[int]:
        async with provider(answering(server), server) as (url, client):
            statuses = [(await call(client, url))[0], (await call(client, url))[0]]
            await asyncio.sleep(0.3)  # longer than a provider is trusted to keep it
            statuses.append((await call(client, url))[0])
            pool = next(iter(client._pools.values()))
            await asyncio.sleep(0.05)  # the closed one's connection_lost
            assert pool.open == 1 and len(pool.idle) == 1
            return statuses

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert server.connections == 2  # one for the first two calls, a new one after the pause


def test_work_given_for_meanwhile_runs_once_the_request_is_sent_and_before_its_answer() -> None:
    server = Server()
    released = asyncio.Event()
    ran: list[str] = []

    async def answering_when_released(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await released.wait()  # answers only after the client's meanwhile work
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    def meanwhile() -> None:
        ran.append("meanwhile")
        released.set()

    async def scenario() -> bytes:
        async with provider(answering_when_released, server) as (url, client):
            connection, response = await asyncio.wait_for(
                client.request("POST", url, {}, b"{}", 2.0, 2.0, meanwhile), timeout=5
            )
            try:
                return await response.read()
            finally:
                client.done(connection)

    assert asyncio.run(scenario()) == b"ok"
    assert ran == ["meanwhile"]
