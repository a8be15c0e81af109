"""The in-memory rate limit storage: `limits`' MemoryStorage, without its per-count key walk.

limits 5.8's async MemoryStorage starts a task after nearly every count that walks every key
it holds to drop the expired ones: O(keys) per request. That is ~40 µs of CPU per request
with a few hundred users, and milliseconds per request with the address policy's 65,536
buckets in use, so a client that rotates its address would slow every request.

`count` here is limits' `acquire_sliding_window_entry` then `get_sliding_window` (its sliding
window counter's `hit`, then the counters for the RateLimit fields), with limits' `get` and
`incr` inside, as one synchronous call and without the walk: limits passes them through one to
three error-wrapping coroutines and six awaits, most of the ~45 µs a count cost; in memory
nothing needs waiting for, so nothing can interleave either. Expired counters are dropped here:
at most once every SWEEP_SECONDS, in slices of SWEEP_SLICE keys, between which the event loop
serves requests. A counter read after it expired is dropped on reading, as limits' `get`
does, so the sweep only bounds memory; it never decides a count.

It reads and writes MemoryStorage's undocumented `storage` and `expirations` mappings, so
limits is pinned to the minor this was written against (pyproject.toml), and
tests/integration/test_library_seams.py fails, naming what moved, when they change (or when
the counting `count` repeats changes).
"""

import asyncio
import time
from math import floor

from limits.aio.storage import MemoryStorage

# How often expired counters are dropped, and how many keys one slice of a sweep looks at.
SWEEP_SECONDS = 10.0
SWEEP_SLICE = 1_000

Window = tuple[int, float, int, float]


class SweptMemoryStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        self._sweeper: asyncio.Task[None] | None = None

    def count(self, key: str, limit: int, expiry: int) -> tuple[bool, Window]:
        """Count one request against `key` if the sliding window allows it; then the two
        counters (the last window's count and time to live, this window's), as limits'
        `acquire_sliding_window_entry` and `get_sliding_window` do, at one moment."""
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous_count = self._read(previous_key, now)
        current_count = self._read(current_key, now)
        previous_ttl = 0.0
        if previous_count:
            previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        allowed = floor(previous_count * previous_ttl / expiry + current_count) + 1 <= limit
        if allowed:  # limits' incr of this window's counter, which lives two windows
            self._maybe_sweep()
            current_count = self.storage[current_key] = self.storage[current_key] + 1
            if current_count == 1:
                self.expirations[current_key] = now + 2 * expiry
        return allowed, (previous_count, previous_ttl, current_count, current_ttl)

    def _read(self, key: str, now: float) -> int:
        """limits' `get`: a counter read after it expired is dropped."""
        if self.expirations.get(key, 0) <= now:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)
        return self.storage.get(key, 0)

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
