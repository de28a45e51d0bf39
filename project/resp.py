"""A thin Redis client for the gateway's hot path: one pipelined connection per event loop.

redis-py's asyncio client spends about 0.3 ms of CPU on every round trip (a pool
checkout, a per-connection lock, its retry wrapper, command packing and a parser
that awaits each element of a reply): more than the Lua it carries, and at two
round trips a request, the largest share of a gateway process's CPU
(bench/RESULTS.md). This client is an `asyncio.Protocol`: a command is packed by
hiredis (C), written to the transport and answered by a future; replies are
parsed by hiredis's reader as bytes arrive and hand their futures their results
in order. Concurrent requests share the one connection (Redis answers in the
order it was asked), so there is no pool and no lock.

It covers what the gateway's engine sends: single commands, pipelines
(``transaction=False``) and the few command methods named in `Commands`. Replies
are what hiredis makes of RESP2 (bytes, ints, lists, ``b"OK"``), as redis-py gives
them without ``decode_responses``, except that no response callbacks run (``SET``
answers ``b"OK"``, not True). Errors are redis-py's own exception classes
(`NoScriptError`, `ResponseError`, `ConnectionError`, `TimeoutError`), so callers
catch the same things with either client. Blocking commands, pub/sub, locks and
scans stay on redis-py (`project.redis.async_client`).

A lost connection fails the commands waiting on it with ConnectionError (they
may or may not have run: a script is never sent twice); the next command
reconnects. A connection with commands waiting and no reply for
``reply_timeout`` seconds is dropped the same way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio
from redis._parsers.base import BaseParser
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

REPLY_TIMEOUT_SECONDS = 10.0


def _error(reply: hiredis.ReplyError) -> ResponseError:
    """The redis-py exception for an error reply (NOSCRIPT -> NoScriptError, ...)."""
    error = BaseParser.parse_error(str(reply))
    return error if isinstance(error, ResponseError) else ResponseError(str(reply))


def tls_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """For a ``rediss://`` URL, the TLS its query asks for, as redis-py reads it:
    ``ssl_ca_certs`` (a private CA), ``ssl_cert_reqs`` (``none``/``optional``/``required``)
    and ``ssl_check_hostname``; by default the system's CAs and the host name are checked."""
    if options.get("connection_class") is not SSLConnection:
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    check_hostname = options.get("ssl_check_hostname")
    requirement = str(options.get("ssl_cert_reqs") or "required").lower()
    if requirement not in ("none", "optional", "required"):
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {requirement!r}")
    if requirement == "none" or check_hostname is False:
        context.check_hostname = False
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[requirement]
    return context


class _Batch:
    """The replies of one pipeline, collected until the last arrives."""

    __slots__ = ("future", "remaining", "replies")

    def __init__(self, future: asyncio.Future[Any], size: int) -> None:
        self.future = future
        self.remaining = size
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        # Futures (single commands) and batches (pipelines), in the order they were sent.
        self.pending: deque[asyncio.Future[Any] | _Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._watched: object = None  # the head of `pending` at the watchdog's last look
        # Commands sent during one turn of the event loop go out in one write at its end.
        self.outgoing: list[bytes] = []

    def flush(self) -> None:
        data, self.outgoing = self.outgoing, []
        if self.transport is not None:
            self.transport.write(b"".join(data))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if isinstance(reply, hiredis.ReplyError):
                reply = _error(reply)
            waiter = pending[0]
            if type(waiter) is _Batch:
                waiter.replies.append(reply)
                waiter.remaining -= 1
                if waiter.remaining:
                    continue
                pending.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(waiter.replies)
            else:
                pending.popleft()
                if not waiter.done():  # type: ignore[union-attr]
                    if isinstance(reply, ResponseError):
                        waiter.set_exception(reply)  # type: ignore[union-attr]
                    else:
                        waiter.set_result(reply)  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        self.transport = None
        self.fail(ConnectionError(f"the connection to Redis was lost ({self.lost})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self, error: Exception) -> None:
        while self.pending:
            waiter = self.pending.popleft()
            future = waiter.future if type(waiter) is _Batch else waiter
            if not future.done():  # type: ignore[union-attr]
                future.set_exception(error)  # type: ignore[union-attr]

    def watch(self, timeout: float) -> None:
        """Every ``timeout`` seconds while connected: a command that was the oldest one
        waiting at the last look too has had no reply for that long; drop the connection
        (and fail every waiting command) rather than hang the requests behind it."""
        if self.transport is None:
            return
        head = self.pending[0] if self.pending else None
        if head is not None and head is self._watched:
            self.fail(RedisTimeoutError(f"Redis did not answer within {timeout:g} s"))
            self.transport.abort()
            return
        self._watched = head
        asyncio.get_running_loop().call_later(timeout, self.watch, timeout)


class Commands:
    """The commands the gateway sends, as methods; `execute_command` does the work."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        raise NotImplementedError

    def get(self, name: str) -> Any:
        return self.execute_command("GET", name)

    def set(self, name: str, value: Any, px: int | None = None, ex: int | None = None) -> Any:
        args: list[Any] = ["SET", name, value]
        if px is not None:
            args += ["PX", px]
        if ex is not None:
            args += ["EX", ex]
        return self.execute_command(*args)

    def mget(self, keys: str | Sequence[str], *more: str) -> Any:
        names = [keys] if isinstance(keys, str) else list(keys)
        return self.execute_command("MGET", *names, *more)

    def delete(self, *names: str) -> Any:
        return self.execute_command("DEL", *names)

    def incrby(self, name: str, amount: int = 1) -> Any:
        return self.execute_command("INCRBY", name, amount)

    def expire(self, name: str, seconds: int) -> Any:
        return self.execute_command("EXPIRE", name, seconds)

    def rpush(self, name: str, *values: Any) -> Any:
        return self.execute_command("RPUSH", name, *values)

    def hget(self, name: str, key: Any) -> Any:
        return self.execute_command("HGET", name, key)

    def hmget(self, name: str, keys: Any, *more: Any) -> Any:
        fields = [keys] if isinstance(keys, (str, bytes)) else list(keys)
        return self.execute_command("HMGET", name, *fields, *more)

    def hset(
        self,
        name: str,
        key: Any = None,
        value: Any = None,
        mapping: dict[Any, Any] | None = None,
    ) -> Any:
        pairs: list[Any] = [] if key is None else [key, value]
        for field, item in (mapping or {}).items():
            pairs += [field, item]
        return self.execute_command("HSET", name, *pairs)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def script_load(self, script: str) -> Any:
        return self.execute_command("SCRIPT", "LOAD", script)


class Pipeline(Commands):
    """Commands queued and sent in one write; `execute` answers them in order."""

    def __init__(self, client: RespClient) -> None:
        self.client = client
        # (args, options), as redis-py's pipeline keeps them (Breakers.run replays some).
        self.command_stack: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> Pipeline:
        self.command_stack.append((args, options))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        replies = await self.client.send_many([args for args, _ in stack])
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies


class RespClient(Commands):
    """One pipelined connection to the Redis of ``url`` (redis://, rediss://, unix://)."""

    def __init__(self, url: str, reply_timeout: float = REPLY_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.reply_timeout = reply_timeout
        self._options = parse_url(url)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    def pipeline(self, transaction: bool = False) -> Pipeline:
        if transaction:
            raise ValueError("RespClient pipelines are not transactions; use redis-py for MULTI")
        return Pipeline(self)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        future = asyncio.get_running_loop().create_future()
        self._send(protocol, hiredis.pack_command(args), future)
        return await future

    async def send_many(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands``, sent in one write; an error reply is its exception."""
        packed = [hiredis.pack_command(args) for args in commands]
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        future = asyncio.get_running_loop().create_future()
        self._send(protocol, b"".join(packed), _Batch(future, len(packed)))
        return list(await future)

    def _send(self, protocol: _Protocol, data: bytes, waiter: asyncio.Future[Any] | _Batch) -> None:
        if protocol.transport is None:
            # Lost between its opening and this caller's turn: nothing would answer.
            raise ConnectionError("the connection to Redis was lost")
        protocol.pending.append(waiter)
        if protocol.outgoing:
            protocol.outgoing.append(data)
        else:
            protocol.outgoing = [data]
            asyncio.get_running_loop().call_soon(protocol.flush)

    async def _connect(self) -> _Protocol:
        # A finished attempt is never reused: its callers may all have been cancelled
        # before they could forget it, and its connection may be gone since.
        connecting = self._connecting
        if connecting is None or connecting.done():
            connecting = self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            async with asyncio.timeout(self.reply_timeout):
                if "path" in options:
                    _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
                else:
                    _, protocol = await loop.create_connection(
                        _Protocol,
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=tls_context(options),
                    )
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"could not connect to Redis ({type(exc).__name__})") from None
        protocol.watch(self.reply_timeout)
        hello: list[tuple[Any, ...]] = []
        if options.get("password"):
            user = options.get("username")
            hello.append(
                ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            )
        if options.get("db"):
            hello.append(("SELECT", options["db"]))
        if hello:
            future = loop.create_future()
            self._send(
                protocol,
                b"".join(hiredis.pack_command(c) for c in hello),
                _Batch(future, len(hello)),
            )
            for reply in await future:
                if isinstance(reply, ResponseError):
                    if protocol.transport is not None:
                        protocol.transport.close()
                    raise reply
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed


# What the engine's parts accept: the gateway's client, or redis-py's asyncio client
# (health probes in workers, tests).
AsyncRedis = RespClient | redis.asyncio.Redis
