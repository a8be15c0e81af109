"""The Redis rate limit storage: `limits`' sliding window counter, many requests per round trip.

Through limits' RedisStorage, each request costs two round trips to Redis (count, then read
the two counters), and with redis-py each costs ~150-200 µs of this process's CPU: together a
third of what a whole request costs here. So this module sends limits' own two Lua scripts
(the same scripts on the same keys RedisStorage uses, so the counting is limits', to the byte)
as one script, each run as a Lua function of its own: one command per request, which counts
and then reads the counters as limits' `hit` and `get_sliding_window` would, atomically.

The commands of every request that asks while a round trip is under way go together in the
next one, on one connection this module holds (as auto-pipelining clients do): at most one
round trip is in flight, and a request waits at most for it. The connection is driven through
redis-py's public connection methods (pack, send, read a reply), without its pipeline layer,
which cost ~25 % more CPU per count.

The scripts are RedisBridge's class attributes, which limits does not document, so limits is
pinned to its minor and tests/integration/test_library_seams.py checks their hashes and that a
count made here is the count RedisStorage reads.
"""

import asyncio
import hashlib
from dataclasses import dataclass, field

from limits.aio.storage.redis.bridge import RedisBridge
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

# At most this many requests in one round trip; more wait for the next.
BATCH_LIMIT = 256

Window = tuple[int, float, int, float]

# limits' two scripts, verbatim, each the body of a function whose parameters shadow the
# globals KEYS and ARGV: first the count (ARGV: limit, window seconds, amount), then the read
# (ARGV: window seconds). One reply: allowed (1 or 0), then the read's four values.
COUNT_AND_READ = b"\n".join(
    [
        b"local function acquire(KEYS, ARGV)",
        RedisBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW,
        b"end",
        b"local function read(KEYS, ARGV)",
        RedisBridge.SCRIPT_SLIDING_WINDOW,
        b"end",
        b"local allowed = acquire(KEYS, ARGV)",
        b"local window = read(KEYS, {ARGV[2]})",
        b"return {allowed and 1 or 0, window[1], window[2], window[3], window[4]}",
    ]
)
COUNT_AND_READ_SHA1 = hashlib.sha1(
    COUNT_AND_READ, usedforsecurity=False
).hexdigest()  # its name in Redis


@dataclass(slots=True)
class _Pending:
    command: tuple[str | int, ...]
    deadline: float  # the event loop's time by which its caller has an answer
    answer: asyncio.Future[tuple[bool, Window]] = field(repr=False)


class RedisCounters:
    """Sliding window counters in Redis under `key_prefix`, the keys limits' RedisStorage
    gives them."""

    def __init__(self, connections: ConnectionPool, key_prefix: str) -> None:
        self._connections = connections
        self._connection: AbstractConnection | None = None
        self._prefix = key_prefix
        self._timeout = connections.connection_kwargs.get("socket_timeout") or 1.0
        self._pending: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, Window]:
        """Count a request against `key` if the limit allows it; then the two counters (the
        last window's count and time to live, this window's), as limits' `hit` and
        `get_sliding_window` would. Within the socket timeout, or TimeoutError."""
        current = f"{self._prefix}:{{{key}}}"
        command = ("EVALSHA", COUNT_AND_READ_SHA1, 2, f"{current}/-1", current)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[bool, Window]] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._pending.append(_Pending((*command, limit, window_seconds, 1), deadline, answer))
        if self._sender is None:  # nothing under way: send with the next turn of the loop
            self._sender = asyncio.create_task(self._send_all(), name="rate limit counts")
        return await answer

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for pending in self._pending:  # queued, never to be sent: answered, not left waiting
            if not pending.answer.done():
                pending.answer.set_exception(ConnectionError("the rate limit counts stopped"))
        self._pending = []
        if self._connection is not None:
            await self._connection.disconnect()
        await self._connections.aclose()

    async def _send_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            # One deadline for the batch, its first caller's (the earliest): so every caller
            # is answered within its own, with one timer per round trip, not one per request.
            async with asyncio.timeout_at(batch[0].deadline):
                replies = await self._round_trip([p.command for p in batch])
                if any(isinstance(reply, NoScriptError) for reply in replies):
                    # A restarted (or flushed) Redis has forgotten the script: load, send again.
                    await self._round_trip([("SCRIPT", "LOAD", COUNT_AND_READ)])
                    replies = await self._round_trip([p.command for p in batch])
        except BaseException as error:  # every caller gets it, and fails open
            stopped = not isinstance(error, Exception)  # cancelled: the service is stopping
            failure = ConnectionError("the rate limit counts stopped") if stopped else error
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(failure)
            if stopped:
                raise
            return
        for pending, reply in zip(batch, replies, strict=True):
            if pending.answer.done():  # its caller stopped waiting (went away)
                continue
            try:
                if isinstance(reply, Exception):
                    raise reply
                pending.answer.set_result(_counted(reply))
            except Exception as error:  # this caller's alone; the others' still stand
                pending.answer.set_exception(error)

    async def _round_trip(self, commands: list[tuple[str | int | bytes, ...]]) -> list[object]:
        """Send the commands at once, read their replies (a reply that is an error, as the
        error); on any failure (the batch's deadline included) the connection is dropped (it
        may hold half a reply) and the next round trip opens another."""
        sent = commands
        if self._connection is None:
            # Connects on its first send. Without redis-py's per-operation socket timeout:
            # that wraps every send in asyncio.wait_for (a task each), and the round trip as a
            # whole is bounded by its batch's deadline instead.
            options = {**self._connections.connection_kwargs, "socket_timeout": None}
            self._connection = self._connections.connection_class(**options)
            # A new connection may reach a Redis that never saw the script: load it in the
            # same round trip, so a first count costs one round trip, not three.
            sent = [("SCRIPT", "LOAD", COUNT_AND_READ), *commands]
        connection = self._connection
        replies: list[object] = []
        try:
            await connection.send_packed_command(connection.pack_commands(sent), check_health=False)
            for _ in sent:
                try:
                    replies.append(await connection.read_response(timeout=float("inf")))
                except ResponseError as error:  # a whole reply: the stream stays in step
                    replies.append(error)
        except BaseException:
            self._connection = None
            await connection.disconnect(nowait=True)
            raise
        return replies[len(sent) - len(commands) :]


def _counted(reply: object) -> tuple[bool, Window]:
    """The script's reply: whether it counted, and the counters as limits' RedisStorage's
    get_sliding_window returns them."""
    if not isinstance(reply, list) or len(reply) != 5:  # allowed, then four values
        raise ResponseError(f"unexpected reply to the rate limit script: {reply!r}")
    allowed, last, last_ttl, this, this_ttl = reply
    return bool(allowed), (
        int(last or 0),
        max(0.0, float(last_ttl or 0)) / 1000,
        int(this or 0),
        max(0.0, float(this_ttl or 0)) / 1000,
    )


def redis_counters(url: str, timeout: float, key_prefix: str) -> RedisCounters:
    """Counters at `url`, redis:// or rediss:// (Redis or Valkey), each socket operation
    bounded as each call is, so a dead server cannot hold a connection for long."""
    connections = ConnectionPool.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    return RedisCounters(connections, key_prefix)
