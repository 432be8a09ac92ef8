from __future__ import annotations

import pytest

from services.lru import LRU


def test_the_least_recently_stored_key_goes_first() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # stored again: now the most recent
    cache.put("c", 4)
    assert dict(cache) == {"a": 3, "c": 4}


def test_reading_does_not_make_a_key_recent() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1 and "a" in cache
    cache.put("c", 3)
    assert list(cache) == ["b", "c"]


def test_move_to_end_keeps_a_key_longest() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.move_to_end("a")
    cache.put("c", 3)
    assert list(cache) == ["a", "c"]


def test_never_holds_more_than_its_size() -> None:
    cache: LRU[int, int] = LRU(3)
    for i in range(100):
        cache.put(i, i)
        assert len(cache) <= 3
    assert list(cache) == [97, 98, 99]


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        LRU(0)
