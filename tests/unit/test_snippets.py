# SPDX-License-Identifier: Apache-2.0
"""lsp/core/snippets.py: the chunk store, its bounds and eviction, and similarity selection."""

from __future__ import annotations

import pytest

from lspilot.lsp.core.snippets import (
    Snippet,
    SnippetStore,
    identifier_tokens,
    jaccard,
    select_snippets,
)

GEOMETRY = """\
class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def distance_to(self, other):
        return ((self.x - other.x) ** 2 + (self.y - other.y) ** 2) ** 0.5
"""

HTTP = """\
def fetch_json(session, url, timeout):
    response = session.get(url, timeout=timeout)
    response.raise_for_status()
    return response.json()
"""

CURSOR = "p = Point(1, 2)\nq = Point(3, 4)\nd = p.distance_to(q)\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("def foo(bar): return bar", {"foo", "bar"}, id="keywords-dropped"),
        pytest.param("x = y", set(), id="one-letter-names-dropped"),
        pytest.param("self.value = None", {"value"}, id="self-and-none"),
        pytest.param("fetch_json(url2)", {"fetch_json", "url2"}, id="underscores-digits"),
    ],
)
def test_identifier_tokens(text: str, expected: set[str]) -> None:
    assert identifier_tokens(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param({"a1", "b1"}, {"a1", "b1"}, 1.0, id="same"),
        pytest.param({"a1", "b1"}, {"b1", "c1"}, 1 / 3, id="half-overlap"),
        pytest.param({"a1"}, {"b1"}, 0.0, id="disjoint"),
        pytest.param(set(), {"b1"}, 0.0, id="empty"),
    ],
)
def test_jaccard(a: set[str], b: set[str], expected: float) -> None:
    assert jaccard(frozenset(a), frozenset(b)) == pytest.approx(expected)


def test_selects_the_file_that_defines_the_names_at_the_cursor() -> None:
    store = SnippetStore()
    store.set_document("http.py", HTTP)
    store.set_document("geometry.py", GEOMETRY)
    assert select_snippets(store, CURSOR, 10_000) == [
        Snippet("geometry.py", GEOMETRY.rstrip("\n") + "\n")
    ]


@pytest.mark.parametrize(
    ("max_chars", "exclude", "expected_paths"),
    [
        pytest.param(10_000, None, ["geometry.py"], id="best-only-above-min-score"),
        pytest.param(10, None, [], id="budget-too-small"),
        pytest.param(0, None, [], id="zero-budget"),
        pytest.param(10_000, "geometry.py", [], id="current-document-excluded"),
    ],
)
def test_select_budget_and_exclusion(
    max_chars: int, exclude: str | None, expected_paths: list[str]
) -> None:
    store = SnippetStore()
    store.set_document("http.py", HTTP)
    store.set_document("geometry.py", GEOMETRY)
    chosen = select_snippets(store, CURSOR, max_chars, exclude_path=exclude)
    assert [s.path for s in chosen] == expected_paths


def test_empty_cursor_window_selects_nothing() -> None:
    store = SnippetStore()
    store.set_document("geometry.py", GEOMETRY)
    assert select_snippets(store, "   \n", 1000) == []


def test_windows_overlap_but_only_one_is_taken() -> None:
    body = "\n".join(f"value_{i} = compute_{i}(Point)" for i in range(60))
    store = SnippetStore(window_lines=20, window_step=10)
    store.set_document("big.py", body)
    assert len(store) == 5  # windows at 0, 10, 20, 30, 40 (the last one reaching line 60)
    chosen = select_snippets(store, "Point value_55 compute_55", 100_000, min_score=0.0)
    starts = [s.text.split("\n")[0] for s in chosen]
    assert starts[0] == "value_40 = compute_40(Point)"
    assert len(chosen) == 3  # 40-60, then 0-20 and 20-40: 10-30 and 30-50 overlap a chosen one


def test_recent_chunks_of_the_current_file_stay_eligible() -> None:
    text = "\n".join(["pad_line = 0"] * 200 + [GEOMETRY])
    store = SnippetStore(recent_lines=8)
    store.set_document("geometry.py", text)
    store.add_recent("geometry.py", text, around_line=203)
    chosen = select_snippets(store, CURSOR, 10_000, exclude_path="geometry.py")
    assert len(chosen) == 1 and "distance_to" in chosen[0].text


def test_chunk_already_in_view_is_skipped() -> None:
    store = SnippetStore()
    store.add_recent("geometry.py", GEOMETRY, 0)
    assert select_snippets(store, CURSOR + GEOMETRY, 10_000) == []


def test_ring_is_bounded_and_newest_first() -> None:
    store = SnippetStore(max_recent=3, recent_lines=4)
    for i in range(5):
        store.add_recent(f"f{i}.py", f"unique_name_{i} = other_name_{i}\n", 0)
    assert [c.path for c in store.chunks()] == ["f4.py", "f3.py", "f2.py"]


@pytest.mark.parametrize(
    ("second_path", "second_text", "second_line", "expected_paths"),
    [
        pytest.param("a.py", GEOMETRY, 0, ["a.py"], id="same-text-replaces"),
        pytest.param(
            "b.py", GEOMETRY.replace("0.5", "0.25"), 0, ["b.py"], id="near-duplicate-evicted"
        ),
        pytest.param("a.py", GEOMETRY + "\n" + HTTP, 1, ["a.py"], id="same-region-replaced"),
        pytest.param("b.py", HTTP, 0, ["b.py", "a.py"], id="different-kept"),
    ],
)
def test_ring_evicts_near_duplicates(
    second_path: str, second_text: str, second_line: int, expected_paths: list[str]
) -> None:
    store = SnippetStore(recent_lines=16)
    store.add_recent("a.py", GEOMETRY, 0)
    store.add_recent(second_path, second_text, second_line)
    assert [c.path for c in store.chunks()] == expected_paths


def test_documents_are_bounded_and_removable() -> None:
    store = SnippetStore(max_documents=2)
    for name in ("a.py", "b.py", "c.py"):
        store.set_document(name, f"{name[0]}_name = 1\n")
    store.add_recent("c.py", "c_name = 2\n", 0)
    assert {c.path for c in store.chunks()} == {"b.py", "c.py"}
    store.remove_document("c.py")
    assert [c.path for c in store.chunks()] == ["b.py"]


def test_blank_input_adds_nothing() -> None:
    store = SnippetStore()
    store.set_document("empty.py", "\n\n")
    store.add_recent("empty.py", "   \n", 0)
    assert len(store) == 0


def test_bad_window_config() -> None:
    with pytest.raises(ValueError):
        SnippetStore(window_lines=10, window_step=20)
