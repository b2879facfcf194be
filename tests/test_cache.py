"""The one cache (scoremap.cache): bounded in bytes, one load per key, loads outside the lock."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from scoremap.cache import ByteLRU, file_identity


def test_entries_are_weighed_in_bytes_and_the_least_recent_go_first():
    cache = ByteLRU(100)
    for key in "abc":
        cache.get(key, lambda key=key: (key, 40))  # 40 + 40 + 40 > 100: "a" goes
    assert "a" not in cache and "b" in cache and "c" in cache and cache.nbytes == 80
    cache.get("b", lambda: pytest.fail("b is cached"))  # b becomes the most recent
    cache.get("d", lambda: ("d", 40))
    assert "c" not in cache and "b" in cache and "d" in cache


def test_a_value_larger_than_the_budget_is_served_but_not_kept():
    cache = ByteLRU(100)
    cache.get("small", lambda: (1, 10))
    assert cache.get("huge", lambda: ("x", 1000)) == "x"
    assert "huge" not in cache and "small" in cache  # and it evicted nothing


def test_concurrent_requests_for_a_cold_key_load_it_once():
    cache = ByteLRU(1 << 20)
    calls = []
    started = threading.Event()
    release = threading.Event()

    def load():
        calls.append(threading.get_ident())
        started.set()
        assert release.wait(10)
        return "opened", 1

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("slide", load))) for _ in range(8)
    ]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert results == ["opened"] * 8 and len(calls) == 1


def test_a_slow_load_holds_no_lock_that_other_keys_wait_on():
    """A cold NDPI open (seconds) must not stall another slide's requests: the second key is
    served while the first load is still blocked, or the test would time out."""
    cache = ByteLRU(1 << 20)
    release = threading.Event()
    slow = threading.Thread(target=lambda: cache.get("ndpi", lambda: (release.wait(10), 1)))
    slow.start()
    other = []
    fast = threading.Thread(target=lambda: other.append(cache.get("svs", lambda: ("svs", 1))))
    fast.start()
    fast.join(5)
    assert other == ["svs"] and slow.is_alive()
    release.set()
    slow.join(10)


def test_a_failed_load_reaches_every_waiter_and_is_not_kept():
    cache = ByteLRU(1 << 20)
    started, release = threading.Event(), threading.Event()

    def load():
        started.set()
        release.wait(10)
        raise OSError("disk gone")

    errors = []

    def ask():
        try:
            cache.get("k", load)
        except OSError as exc:
            errors.append(str(exc))

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(10)
    waiter = threading.Thread(target=ask)
    waiter.start()
    release.set()
    first.join(10)
    waiter.join(10)
    assert errors == ["disk gone", "disk gone"]
    assert (
        "k" not in cache and cache.get("k", lambda: ("ok", 1)) == "ok"
    )  # the next request retries


def _child_sees(cache: ByteLRU, queue) -> None:
    queue.put(("k" in cache, len(cache)))


def test_a_forked_worker_starts_with_an_empty_cache():
    cache = ByteLRU(1 << 20)
    cache.get("k", lambda: ("parent's slide handle", 1))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=lambda: (cache.get("x", lambda: (0, 1)), _child_sees(cache, queue)))
    proc.start()
    proc.join(20)
    assert queue.get(timeout=5) == (False, 1)  # only what the child loaded itself
    assert "k" in cache


def test_file_identity_changes_when_a_file_is_rewritten(tmp_path):
    path = tmp_path / "s_blockmap.h5"
    path.write_bytes(b"1")
    first = file_identity(path)
    replacement = tmp_path / "new"
    replacement.write_bytes(b"22")
    os.replace(replacement, path)  # what atomic_output does on a rescore
    assert file_identity(path) != first
    path.unlink()
    assert file_identity(path) == (str(path), None)
