# SPDX-License-Identifier: Apache-2.0
"""lsp/core/cache.py: exact hits, typed-through hits, keys, LRU bounds, TTL and invalidation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from lspilot.lsp.core.cache import CacheStats, CompletionCache


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\nprint(add(1, 2))\n"
TEXT = "a + b"
VERSIONS = {"file:///other.py": 3}


def _cache(**kwargs: Any) -> tuple[CompletionCache, FakeClock]:
    clock = FakeClock()
    cache = CompletionCache(clock=clock, **kwargs)
    cache.store(PREFIX, SUFFIX, VERSIONS, TEXT, model_id="m", policy="single_line", uri="file:///a")
    return cache, clock


@pytest.mark.parametrize(
    ("prefix", "suffix", "versions", "model_id", "policy", "expected"),
    [
        pytest.param(PREFIX, SUFFIX, VERSIONS, "m", "single_line", TEXT, id="exact"),
        pytest.param(
            PREFIX,
            SUFFIX,
            [("file:///other.py", 3)],
            "m",
            "single_line",
            TEXT,
            id="versions-as-pairs",
        ),
        pytest.param(PREFIX + "a", SUFFIX, VERSIONS, "m", "single_line", " + b", id="typed-1"),
        pytest.param(PREFIX + "a + ", SUFFIX, VERSIONS, "m", "single_line", "b", id="typed-3"),
        pytest.param(PREFIX + "a + b", SUFFIX, VERSIONS, "m", "single_line", None, id="typed-all"),
        pytest.param(PREFIX + "b", SUFFIX, VERSIONS, "m", "single_line", None, id="typed-other"),
        pytest.param(PREFIX[:-1], SUFFIX, VERSIONS, "m", "single_line", None, id="backspace"),
        pytest.param(
            PREFIX, SUFFIX + "x", VERSIONS, "m", "single_line", None, id="suffix-edit-in-head"
        ),
        pytest.param(PREFIX, "x" + SUFFIX, VERSIONS, "m", "single_line", None, id="suffix-changed"),
        pytest.param(
            PREFIX, SUFFIX, {"file:///other.py": 4}, "m", "single_line", None, id="snippet-version"
        ),
        pytest.param(PREFIX, SUFFIX, {}, "m", "single_line", None, id="snippet-dropped"),
        pytest.param(PREFIX, SUFFIX, VERSIONS, "other", "single_line", None, id="model-changed"),
        pytest.param(PREFIX, SUFFIX, VERSIONS, "m", "multi_line", None, id="policy-changed"),
        pytest.param(
            "# header\n" * 1000 + PREFIX,
            SUFFIX,
            VERSIONS,
            "m",
            "single_line",
            None,
            id="edit-above-within-tail",
        ),
    ],
)
def test_lookup(
    prefix: str, suffix: str, versions: Any, model_id: str, policy: str, expected: str | None
) -> None:
    cache, _ = _cache()
    assert cache.lookup(prefix, suffix, versions, model_id=model_id, policy=policy) == expected


def test_prefix_is_keyed_on_its_tail_only() -> None:
    cache, _ = _cache(prefix_tail_chars=len(PREFIX))
    far_edit = "import os\n" + PREFIX
    assert cache.lookup(far_edit, SUFFIX, VERSIONS, model_id="m", policy="single_line") == TEXT


def test_suffix_is_keyed_on_its_head_only() -> None:
    cache, _ = _cache(suffix_head_chars=len(SUFFIX))
    far_edit = SUFFIX + "import os\n"
    assert cache.lookup(PREFIX, far_edit, VERSIONS, model_id="m", policy="single_line") == TEXT


def test_typed_through_is_bounded() -> None:
    clock = FakeClock()
    cache = CompletionCache(clock=clock, max_typed_through=2)
    cache.store("x = ", "", None, "abcdef")
    assert cache.lookup("x = ab", "", None) == "cdef"
    assert cache.lookup("x = abc", "", None) is None


def test_stats_count_each_kind() -> None:
    cache, _ = _cache()
    cache.lookup(PREFIX, SUFFIX, VERSIONS, model_id="m", policy="single_line")
    cache.lookup(PREFIX + "a", SUFFIX, VERSIONS, model_id="m", policy="single_line")
    cache.lookup("nothing", SUFFIX, VERSIONS)
    assert cache.stats == CacheStats(hits=1, typed_through_hits=1, misses=1)


def test_ttl_expires_entries() -> None:
    cache, clock = _cache(ttl_s=10)
    clock.now += 9
    assert cache.lookup(PREFIX, SUFFIX, VERSIONS, model_id="m", policy="single_line") == TEXT
    clock.now += 11
    assert cache.lookup(PREFIX, SUFFIX, VERSIONS, model_id="m", policy="single_line") is None
    assert len(cache) == 0 and cache.stats.expirations == 1


def test_lru_evicts_least_recently_used() -> None:
    cache = CompletionCache(max_entries=2, clock=FakeClock())
    cache.store("a", "", None, "1")
    cache.store("b", "", None, "2")
    assert cache.lookup("a", "", None) == "1"  # "a" is now the most recent
    cache.store("c", "", None, "3")
    assert (cache.lookup("a", "", None), cache.lookup("b", "", None)) == ("1", None)
    assert cache.lookup("c", "", None) == "3"
    assert len(cache) == 2 and cache.stats.evictions == 1


def test_store_replaces_and_ignores_empty() -> None:
    cache = CompletionCache(clock=FakeClock())
    cache.store("a", "", None, "1")
    cache.store("a", "", None, "2")
    cache.store("b", "", None, "")
    assert cache.lookup("a", "", None) == "2"
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("uri", "dropped"),
    [
        pytest.param("file:///a", 1, id="made-in-document"),
        pytest.param("file:///other.py", 1, id="used-as-context"),
        pytest.param("file:///unrelated", 0, id="unrelated"),
    ],
)
def test_invalidate_uri(uri: str, dropped: int) -> None:
    cache, _ = _cache()
    assert cache.invalidate_uri(uri) == dropped
    assert len(cache) == 1 - dropped


def test_clear_and_bad_size() -> None:
    cache, _ = _cache()
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        CompletionCache(max_entries=0)


def test_lone_surrogate_does_not_raise() -> None:
    cache = CompletionCache(clock=FakeClock())
    cache.store("x = '\ud800", "", None, "1")
    assert cache.lookup("x = '\ud800", "", None) == "1"


@pytest.mark.parametrize(
    ("typed", "suffix_now", "expected"),
    [
        pytest.param("max(", ")" + SUFFIX, "a, b)", id="auto-closed-paren"),
        pytest.param("max(", ")]" + SUFFIX, None, id="closer-not-opened-by-typing"),
        pytest.param("max", ")" + SUFFIX, None, id="no-opener-typed"),
        pytest.param('print("', '")' + SUFFIX, None, id="not-the-cached-text"),
    ],
)
def test_typed_through_an_auto_closed_bracket(
    typed: str, suffix_now: str, expected: str | None
) -> None:
    cache = CompletionCache(clock=FakeClock())
    cache.store(PREFIX, SUFFIX, None, "max(a, b)")
    assert cache.lookup(PREFIX + typed, suffix_now, None) == expected
