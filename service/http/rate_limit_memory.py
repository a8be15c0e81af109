"""The in-memory rate limit storage: `limits`' MemoryStorage, without its per-count key walk.

limits 5.8's async MemoryStorage starts a task after nearly every count that walks every key
it holds to drop the expired ones: O(keys) per request. That is ~40 µs of CPU per request
with a few hundred users, and milliseconds per request with the address policy's 65,536
buckets in use, so a client that rotates its address would slow every request. This subclass
counts exactly as limits does (its `get`, `incr` and `decr`, minus the walk) and drops expired
counters itself: at most once every SWEEP_SECONDS, in slices of SWEEP_SLICE keys, between
which the event loop serves requests. A counter read after it expired is dropped on reading,
as before (limits' `get`), so the sweep only bounds memory; it never decides a count.

It reads and writes MemoryStorage's undocumented `storage` and `expirations` mappings, so
limits is pinned to the minor this was written against (pyproject.toml), and
tests/integration/test_library_seams.py fails, naming what moved, when they change.
"""

import asyncio
import time

from limits.aio.storage import MemoryStorage

# How often expired counters are dropped, and how many keys one slice of a sweep looks at.
SWEEP_SECONDS = 10.0
SWEEP_SLICE = 1_000


class SweptMemoryStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        self._sweeper: asyncio.Task[None] | None = None

    # `get` is limits' own, repeated here because limits wraps each storage method of every
    # subclass in its error handling again: inherited, each read would pass two wrappers.
    async def get(self, key: str) -> int:
        if self.expirations.get(key, 0) <= time.time():  # expired: dropped on reading
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)
        return self.storage.get(key, 0)

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        await self.get(key)
        self._maybe_sweep()
        # No await from here on, so no other request can interleave: limits' per-key lock
        # (which it takes here) has nothing to guard.
        self.storage[key] += amount
        if self.storage[key] == amount:
            self.expirations[key] = time.time() + expiry
        return self.storage[key]

    async def decr(self, key: str, amount: int = 1) -> int:
        await self.get(key)
        self._maybe_sweep()
        self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage[key]

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _maybe_sweep(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="rate limit sweep")

    async def _sweep(self) -> None:
        keys = list(self.expirations)  # a snapshot: counting goes on while the sweep yields
        for start in range(0, len(keys), SWEEP_SLICE):
            now = time.time()
            for key in keys[start : start + SWEEP_SLICE]:
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)
            await asyncio.sleep(0)

    def counters(self) -> int:
        """How many counters are held (for tests: memory stays bounded)."""
        return len(self.storage)
