"""The Redis rate limit storage: `limits`' sliding window counter, many requests per round trip.

Through limits' RedisStorage, each request costs two round trips to Redis (count, then read
the two counters), and with redis-py each costs ~150-200 µs of this process's CPU: together a
third of what a whole request costs here. So this module runs limits' own two Lua scripts (the
same scripts on the same keys RedisStorage uses, so the counting is limits', to the byte), for
every request that asks while the event loop turns, in one pipeline: one round trip for all of
them, as auto-pipelining clients do. A request waits at most for the round trip under way.

The scripts are RedisBridge's class attributes, which limits does not document, so limits is
pinned to its minor and tests/integration/test_library_seams.py checks their hashes and that a
count made here is the count RedisStorage reads.
"""

import asyncio
from dataclasses import dataclass, field

from limits.aio.storage.redis.bridge import RedisBridge
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import NoScriptError

# At most this many requests in one pipeline; more wait for the next.
BATCH_LIMIT = 256

Window = tuple[int, float, int, float]


@dataclass(slots=True)
class _Pending:
    previous: str
    current: str
    limit: int
    window_seconds: int
    answer: asyncio.Future[tuple[bool, Window]] = field(repr=False)


class RedisCounters:
    """Sliding window counters in Redis under `key_prefix`, the keys limits' RedisStorage
    gives them."""

    def __init__(self, connections: ConnectionPool, key_prefix: str) -> None:
        self._client = Redis(connection_pool=connections)
        self._prefix = key_prefix
        self._acquire = self._client.register_script(RedisBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW)
        self._read = self._client.register_script(RedisBridge.SCRIPT_SLIDING_WINDOW)
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, Window]:
        """Count a request against `key` if the limit allows it; then the two counters (the
        last window's count and time to live, this window's), as limits' `hit` and
        `get_sliding_window` would."""
        current = f"{self._prefix}:{{{key}}}"
        answer: asyncio.Future[tuple[bool, Window]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(f"{current}/-1", current, limit, window_seconds, answer))
        if len(self._pending) == 1:  # the first to ask since the last batch left: send soon
            asyncio.get_running_loop().call_soon(self._send_batch)
        return await answer

    def _send_batch(self) -> None:
        batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
        if self._pending:
            asyncio.get_running_loop().call_soon(self._send_batch)
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._pipeline(batch)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # A restarted (or flushed) Redis has forgotten the scripts: load, send again.
                for script in (self._acquire, self._read):
                    await self._client.script_load(script.script)
                replies = await self._pipeline(batch)
        except Exception as error:  # every caller gets it, and fails open
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(error)
            return
        for n, pending in enumerate(batch):
            if pending.answer.done():  # its caller stopped waiting (timed out)
                continue
            allowed, window = replies[2 * n], replies[2 * n + 1]
            if isinstance(allowed, Exception):
                pending.answer.set_exception(allowed)
            elif isinstance(window, Exception):
                pending.answer.set_exception(window)
            else:
                pending.answer.set_result((bool(allowed), _window(window)))

    async def _pipeline(self, batch: list[_Pending]) -> list[object]:
        async with self._client.pipeline(transaction=False) as pipe:
            for p in batch:
                keys = (p.previous, p.current)
                pipe.evalsha(self._acquire.sha, 2, *keys, p.limit, p.window_seconds, 1)
                pipe.evalsha(self._read.sha, 2, *keys, p.window_seconds)
            replies: list[object] = await pipe.execute(raise_on_error=False)
            return replies


def _window(reply: object) -> Window:
    """The read script's reply as limits' RedisStorage.get_sliding_window returns it."""
    if not isinstance(reply, list) or len(reply) != 4:  # the script returns four values
        return 0, 0.0, 0, 0.0
    last, last_ttl, this, this_ttl = reply
    return (
        int(last or 0),
        max(0.0, float(last_ttl or 0)) / 1000,
        int(this or 0),
        max(0.0, float(this_ttl or 0)) / 1000,
    )
