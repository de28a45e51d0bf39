"""The gateway's own Redis client (project/resp.py), against the real Redis of the suite."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from project.resp import RespClient


def run(scenario: Any) -> Any:
    return asyncio.run(scenario())


def test_commands_answer_what_redis_py_would(redis: Any) -> None:
    async def scenario() -> list[Any]:
        client = RespClient(settings.REDIS_URL)
        try:
            return [
                await client.set("sb:test:a", "1", px=60_000),
                await client.get("sb:test:a"),
                await client.incrby("sb:test:n", 5),
                await client.hset("sb:test:h", "f", 2.5),
                await client.hmget("sb:test:h", ["f", "missing"]),
                await client.mget(["sb:test:a", "sb:test:none"]),
                await client.delete("sb:test:a"),
            ]
        finally:
            await client.aclose()

    assert run(scenario) == [b"OK", b"1", 5, 1, [b"2.5", None], [b"1", None], 1]
    assert redis.get("sb:test:n") == b"5"  # the same database as the rest of the project


def test_a_pipeline_answers_in_order_and_hands_back_errors_when_asked() -> None:
    async def scenario() -> tuple[list[Any], type[BaseException]]:
        client = RespClient(settings.REDIS_URL)
        try:
            pipe = client.pipeline()
            pipe.rpush("sb:test:list", b"x", b"y")
            pipe.evalsha("0" * 40, 0)
            pipe.execute_command("LLEN", "sb:test:list")
            replies = await pipe.execute(raise_on_error=False)
            pipe.hget("sb:test:list", "wrong type")
            with pytest.raises(ResponseError) as raised:
                await pipe.execute()
            return replies, type(raised.value)
        finally:
            await client.aclose()

    replies, raised = run(scenario)
    assert replies[0] == 2 and replies[2] == 2
    assert isinstance(replies[1], NoScriptError)  # redis-py's class: callers reload scripts
    assert raised is ResponseError


def test_a_missing_script_raises_no_script_error() -> None:
    async def scenario() -> None:
        client = RespClient(settings.REDIS_URL)
        try:
            with pytest.raises(NoScriptError):
                await client.execute_command("EVALSHA", "0" * 40, 0)
            sha = await client.script_load("return ARGV[1]")
            assert await client.evalsha(sha.decode(), 0, "echo") == b"echo"
        finally:
            await client.aclose()

    run(scenario)


def test_concurrent_callers_share_one_connection_and_each_gets_its_own_answer() -> None:
    async def scenario() -> tuple[list[Any], int]:
        client = RespClient(settings.REDIS_URL)
        try:
            answers = await asyncio.gather(
                *(client.execute_command("ECHO", f"caller-{i}") for i in range(200))
            )
            clients = await client.execute_command("CLIENT", "LIST")
            name_of_ours = await client.execute_command("CLIENT", "ID")
            return answers, sum(
                1 for line in clients.splitlines() if f"id={name_of_ours} ".encode() in line
            )
        finally:
            await client.aclose()

    answers, ours = run(scenario)
    assert answers == [f"caller-{i}".encode() for i in range(200)]
    assert ours == 1


def test_a_killed_connection_fails_what_waits_on_it_and_the_next_command_reconnects() -> None:
    async def scenario() -> None:
        client, killer = RespClient(settings.REDIS_URL), RespClient(settings.REDIS_URL)
        try:
            first_id = await client.execute_command("CLIENT", "ID")
            assert await killer.execute_command("CLIENT", "KILL", "ID", first_id) == 1
            await asyncio.sleep(0.05)  # the close reaches the client
            assert await client.execute_command("PING") == b"PONG"
            second_id = await client.execute_command("CLIENT", "ID")
            assert second_id != first_id
            # A command in flight when the server drops the connection fails, loudly.
            blocked = asyncio.ensure_future(client.execute_command("BLPOP", "sb:test:never", 5))
            await asyncio.sleep(0.05)
            assert await killer.execute_command("CLIENT", "KILL", "ID", second_id) == 1
            with pytest.raises(ConnectionError):
                await blocked
        finally:
            await client.aclose()
            await killer.aclose()

    run(scenario)


def test_a_server_that_stops_answering_is_dropped_after_the_reply_timeout() -> None:
    async def scenario() -> float:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RespClient(f"redis://127.0.0.1:{port}", reply_timeout=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(TimeoutError):
                await client.execute_command("PING")
        finally:
            await client.aclose()
            server.close()
        return loop.time() - started

    # The watchdog looks every reply_timeout: a command is dropped within two periods.
    assert 0.2 <= run(scenario) < 1.0


def test_an_unreachable_server_is_a_connection_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = RespClient(f"redis://127.0.0.1:{port}")
        with pytest.raises(ConnectionError):
            await client.execute_command("PING")

    run(scenario)


def test_the_url_picks_the_database() -> None:
    async def scenario() -> tuple[Any, Any]:
        parts = urlsplit(settings.REDIS_URL)
        if parts.scheme == "unix":  # the embedded server: its socket, db in the query
            url = f"unix://{parts.path}?db=13"
        else:
            url = urlunsplit(parts._replace(path="/13"))
        client = RespClient(url)
        other = RespClient(settings.REDIS_URL)
        try:
            await client.set("sb:test:where", "13")
            return await client.get("sb:test:where"), await other.get("sb:test:where")
        finally:
            await client.delete("sb:test:where")
            await client.aclose()
            await other.aclose()

    mine, elsewhere = run(scenario)
    assert mine == b"13"
    assert elsewhere is None


def test_a_caller_cancelled_while_connecting_does_not_leave_a_dead_connection_behind() -> None:
    async def scenario() -> Any:
        client, killer = RespClient(settings.REDIS_URL), RespClient(settings.REDIS_URL)
        try:
            # The only caller gives up while the connection is being opened (a request's
            # deadline); the connection opens anyway.
            first = asyncio.ensure_future(client.execute_command("PING"))
            await asyncio.sleep(0)
            first.cancel()
            await asyncio.sleep(0.1)
            first_id = await client.execute_command("CLIENT", "ID")
            assert await killer.execute_command("CLIENT", "KILL", "ID", first_id) == 1
            await asyncio.sleep(0.05)  # the close reaches the client
            # The next command reconnects instead of waiting on the dead connection forever.
            return await asyncio.wait_for(client.execute_command("PING"), 2)
        finally:
            await client.aclose()
            await killer.aclose()

    assert run(scenario) == b"PONG"


def test_a_connection_lost_right_after_it_opened_fails_the_command_instead_of_hanging() -> None:
    async def scenario() -> None:
        async def select_then_hang_up(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read(1 << 16)  # SELECT
            writer.write(b"+OK\r\n")
            writer.close()

        server = await asyncio.start_server(select_then_hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RespClient(f"redis://127.0.0.1:{port}/1")
        try:
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(client.execute_command("PING"), 2)
        finally:
            await client.aclose()
            server.close()

    run(scenario)


def test_a_rediss_url_verifies_by_default_and_takes_redis_pys_tls_options(tmp_path) -> None:
    import ssl

    from redis.connection import parse_url

    from project.resp import tls_context
    from routing.simulator.tls import self_signed

    _, ca = self_signed(tmp_path)
    assert tls_context(parse_url("redis://127.0.0.1:6379/0")) is None
    default = tls_context(parse_url("rediss://cache.internal:6380/0"))
    assert default is not None
    assert default.verify_mode is ssl.CERT_REQUIRED and default.check_hostname
    private = tls_context(parse_url(f"rediss://cache.internal:6380/0?ssl_ca_certs={ca}"))
    assert private is not None and private.cert_store_stats()["x509_ca"] == 1
    lax = tls_context(parse_url("rediss://cache.internal:6380/0?ssl_cert_reqs=none"))
    assert lax is not None
    assert lax.verify_mode is ssl.CERT_NONE and not lax.check_hostname
    with pytest.raises(ValueError):
        tls_context(parse_url("rediss://cache.internal:6380/0?ssl_cert_reqs=maybe"))
