"""The one in-process cache: values by key, bounded in bytes, loaded once per key at a time.

A viewer worker holds open slides, blockmaps, normalised scores, score pyramids and small images;
their sizes differ by five orders of magnitude (a 2 KB thumbnail, a 60 MB per-patch table of a
million-patch slide), so a bound on the number of entries bounds nothing. Every entry here is
counted in bytes, as its loader reports them, and the least recently used go first once the total
passes `max_bytes`.

Single flight: when several threads ask for the same cold key, one loads it and the others wait for
that result (or its exception), so a slide is opened once and a blockmap read once. The lock is held
only to look up and store, never while loading: a cold NDPI or DICOM open (seconds) never blocks a
request for another slide.

Keys should name what the value depends on, a file's identity included (`file_identity`), so a
rescored blockmap is a new key and never served stale; the old entry simply ages out. The viewer's
HTTP ETags are made from the same identity, so a browser revalidates exactly when this cache
would read the file afresh.

Fork-safe: a process forked from the one that filled the cache (gunicorn's workers after
`preload_app`) starts with an empty cache, because slide handles and locks do not survive a fork.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


def file_identity(path: os.PathLike[str] | str) -> tuple[object, ...]:
    """What changes when a file is rewritten or replaced: (path, inode, size, mtime in ns).

    The one notion of "the same file" for cache keys and ETags alike: a file renamed over the old
    one (every rescore, a restore from a backup) is a new inode even where size and mtime match.
    A missing file gives (path, None): the caller's load then reports it.
    """
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


class _Flight(Generic[T]):
    """One load in progress: the threads that asked for the same key wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def result(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return cast(T, self.value)


class ByteLRU:
    """A thread-safe LRU whose entries are weighed in bytes, with one load in flight per key."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._flights: dict[Hashable, _Flight[Any]] = {}
        self._bytes = 0

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._reset()

    @property
    def nbytes(self) -> int:
        """Bytes held now (as the loaders reported them)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, load: Callable[[], tuple[T, int]]) -> T:
        """The value of `key`, loading it with `load() -> (value, nbytes)` when absent.

        An exception from `load` reaches every thread waiting on that key, and nothing is stored,
        so the next request tries again.
        """
        self._check_fork()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return cast(T, hit[0])
            waiting: _Flight[T] | None = self._flights.get(key)
            if waiting is None:
                flight: _Flight[T] = _Flight()
                self._flights[key] = flight
        if waiting is not None:
            return waiting.result()
        try:
            value, nbytes = load()
        except BaseException as exc:
            with self._lock:
                self._flights.pop(key, None)
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            self._flights.pop(key, None)
            self._store(key, value, int(nbytes))
        flight.value = value
        flight.done.set()
        return value

    def _store(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # larger than the whole budget: served, not kept (it would evict everything)
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.max_bytes and self._items:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def discard(self, key: Hashable) -> None:
        """Forget one entry (e.g. a slide handle whose reads failed: OpenSlide errors are sticky)."""
        self._check_fork()
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def array_bytes(*arrays: Any) -> int:
    """Bytes of numpy arrays (None and non-arrays count 0): what a loader reports for its value."""
    return int(sum(getattr(a, "nbytes", 0) for a in arrays if a is not None))
