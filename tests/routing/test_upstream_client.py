"""The lean upstream client (routing/upstream.py) against real sockets.

Each test runs a small HTTP server on loopback that behaves as a provider can:
chunked bodies, closing after an answer, going quiet, hanging up mid-body, TLS.
The engine-level behaviour (fallback, retries, streams through the gateway) is
covered by the rest of the suite, which runs on this client by default.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from routing import upstream
from routing.http import transport_error

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


async def serving(
    handler: Handler, server: Server, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.Server, str]:
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
    return listening, f"{scheme}://127.0.0.1:{port}/v1/chat/completions"


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
    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server), server)
        client = upstream.Client()
        try:
            answers = [await call(client, url) for _ in range(5)]
        finally:
            await client.aclose()
            listening.close()
        assert [a[0] for a in answers] == [200] * 5
        assert answers[0][2] == b'{"ok": true}'
        assert server.connections == 1
        head = server.requests[0].decode()
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{url.split(':')[2].split('/')[0]}" in head
        assert "Content-Length: 8" in head and server.requests[0].endswith(b'{"q": 1}')

    asyncio.run(scenario())


def test_response_headers_are_lower_case_and_repeated_ones_are_joined() -> None:
    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server), server)
        client = upstream.Client()
        try:
            _, headers, _ = await call(client, url)
        finally:
            await client.aclose()
            listening.close()
        assert headers["x-ratelimit-remaining-requests"] == "9"
        assert headers["set-cookie"] == "a=1, b=2"

    asyncio.run(scenario())


def test_a_chunked_body_arrives_without_its_framing_piece_by_piece() -> None:
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
        listening, url = await serving(handle, server)
        client = upstream.Client()
        try:
            connection, response = await client.request("POST", url, {}, b"{}", 2.0, 5.0)
            pieces = [piece async for piece in response.iter_chunks()]
            client.done(connection)
            assert connection in connection.pool.idle
        finally:
            await client.aclose()
            listening.close()
        return pieces

    server = Server()
    pieces = asyncio.run(scenario())
    assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    assert len(pieces) == 3  # each as it came, not buffered to the end


def test_a_provider_that_closes_after_answering_gets_a_new_connection_next_time() -> None:
    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server, close=True), server)
        client = upstream.Client()
        try:
            assert (await call(client, url))[0] == 200
            assert (await call(client, url))[0] == 200
        finally:
            await client.aclose()
            listening.close()
        assert server.connections == 2

    asyncio.run(scenario())


def test_a_provider_that_goes_quiet_times_out_after_the_read_timeout() -> None:
    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    async def scenario() -> float:
        listening, url = await serving(quiet, server)
        client = upstream.Client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(TimeoutError) as raised:
                await call(client, url, read_timeout=0.3)
            assert transport_error(raised.value).code == "timeout"
        finally:
            await client.aclose()
            listening.close()
        return loop.time() - started

    server = Server()
    assert 0.3 <= asyncio.run(scenario()) < 1.5


def test_a_refused_connection_is_a_connect_failure() -> None:
    async def scenario() -> None:
        listening, url = await serving(answering(Server()), Server())
        listening.close()
        await listening.wait_closed()
        client = upstream.Client()
        with pytest.raises(upstream.ConnectFailed) as raised:
            await call(client, url)
        assert transport_error(raised.value).code == "connect"

    asyncio.run(scenario())


def test_a_provider_that_hangs_up_mid_body_is_a_disconnection_and_the_connection_is_dropped() -> (
    None
):
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
        await writer.drain()

    async def scenario() -> None:
        listening, url = await serving(cut, server)
        client = upstream.Client()
        try:
            with pytest.raises(upstream.Disconnected) as raised:
                await call(client, url)
            assert transport_error(raised.value).code == "connection"
            pool = next(iter(client._pools.values()))
            assert pool.idle == [] and pool.open == 0
        finally:
            await client.aclose()
            listening.close()

    server = Server()
    asyncio.run(scenario())


def test_a_body_left_unread_closes_its_connection_instead_of_reusing_it() -> None:
    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server, body=b"x" * 200_000), server)
        client = upstream.Client()
        try:
            connection, _ = await client.request("POST", url, {}, b"{}", 2.0, 5.0)
            client.done(connection)  # the caller gave up on the body
            assert (await call(client, url))[2] == b"x" * 200_000
        finally:
            await client.aclose()
            listening.close()
        assert server.connections == 2

    asyncio.run(scenario())


def test_at_its_cap_a_call_waits_for_a_connection_to_come_back() -> None:
    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server), server)
        client = upstream.Client(limit_per_origin=1)
        try:
            answers = await asyncio.gather(*(call(client, url) for _ in range(4)))
        finally:
            await client.aclose()
            listening.close()
        assert [a[0] for a in answers] == [200] * 4
        assert server.connections == 1

    asyncio.run(scenario())


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_https_verifies_the_providers_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))

    async def scenario() -> None:
        server = Server()
        listening, url = await serving(answering(server), server, tls=tls)
        client = upstream.Client()
        try:
            if trusted:
                assert (await call(client, url))[0] == 200
                assert (await call(client, url))[0] == 200
                assert server.connections == 1
            else:
                with pytest.raises(upstream.ConnectFailed):
                    await call(client, url)
        finally:
            await client.aclose()
            listening.close()

    asyncio.run(scenario())
