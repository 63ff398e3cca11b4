# SPDX-License-Identifier: Apache-2.0
"""lsp/core/debounce.py: the adaptive delay, with keystroke times given by the test."""

from __future__ import annotations

from typing import Any

import pytest

from lspilot.lsp.core.debounce import AdaptiveDebounce, DebounceConfig


def _typed(gaps_ms: list[float], config: DebounceConfig | None = None) -> AdaptiveDebounce:
    debounce = AdaptiveDebounce(config or DebounceConfig())
    t = 100.0
    debounce.observe_keystroke(t)
    for gap in gaps_ms:
        t += gap / 1000.0
        debounce.observe_keystroke(t)
    return debounce


@pytest.mark.parametrize(
    ("gaps", "latencies", "context", "expected"),
    [
        pytest.param([], [], {}, 75.0, id="no-history-is-base"),
        pytest.param([100, 100], [], {}, 75.0, id="too-few-samples-is-base"),
        pytest.param([100] * 4, [], {}, 200.0, id="mid-word-twice-the-interval"),
        pytest.param([100] * 4, [], {"last_char": "."}, 150.0, id="after-trigger-char"),
        pytest.param(
            [100] * 4,
            [],
            {"last_char": "(", "at_line_end": True, "at_document_end": True},
            100.0,
            id="most-promising-context-is-the-interval",
        ),
        pytest.param([100] * 4, [], {"at_line_end": True}, 160.0, id="line-end"),
        pytest.param([100] * 4, [80], {}, 160.0, id="latency-half-subtracted"),
        pytest.param([100] * 4, [1000], {}, 20.0, id="slow-model-clamps-to-min"),
        pytest.param([300] * 4, [], {}, 400.0, id="slow-typist-clamps-to-max"),
        pytest.param([100, 100, 5000, 100, 100], [], {}, 200.0, id="pauses-are-not-typing"),
        pytest.param([100] * 4, [], {"manual": True}, 0.0, id="manual-trigger-does-not-wait"),
        pytest.param([], [200], {}, 20.0, id="latency-without-history"),
    ],
)
def test_delay(
    gaps: list[float], latencies: list[float], context: dict[str, Any], expected: float
) -> None:
    debounce = _typed(gaps)
    for ms in latencies:
        debounce.observe_latency(ms)
    assert debounce.delay_ms(**context) == pytest.approx(expected)


def test_latency_is_an_ema() -> None:
    debounce = AdaptiveDebounce(DebounceConfig(latency_alpha=0.5))
    assert debounce.latency_ms is None
    for ms in (100, 200, -5, 300):  # a negative measurement is ignored
        debounce.observe_latency(ms)
    assert debounce.latency_ms == pytest.approx(225.0)


def test_window_forgets_old_typing_speed() -> None:
    debounce = _typed([300] * 10 + [50] * 8, DebounceConfig(window=8))
    assert debounce.typing_interval_ms == pytest.approx(50.0)


def test_adaptive_off_is_a_fixed_debounce() -> None:
    debounce = _typed([10] * 10, DebounceConfig(base_ms=150, adaptive=False))
    debounce.observe_latency(500)
    assert debounce.delay_ms() == 150


def test_clock_going_backwards_is_ignored() -> None:
    debounce = AdaptiveDebounce()
    for t in (10.0, 9.0, 9.1, 9.2, 9.3, 9.4):
        debounce.observe_keystroke(t)
    assert debounce.typing_interval_ms == pytest.approx(100.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"min_ms": 500, "max_ms": 100}, id="min-above-max"),
        pytest.param({"latency_alpha": 0}, id="zero-alpha"),
        pytest.param({"window": 0}, id="empty-window"),
    ],
)
def test_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DebounceConfig(**kwargs)


@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        pytest.param("x = foo", "bar\ny = 1\n", 200.0, id="mid-word"),
        pytest.param("x = foo(", ")\ny = 1\n", 110.0, id="trigger-and-line-end"),
        pytest.param("x = foo", "\n", 150.0, id="line-and-document-end"),
        pytest.param("x = ", "\n  \n", 100.0, id="everything"),
    ],
)
def test_delay_for_reads_the_cursor_context(prefix: str, suffix: str, expected: float) -> None:
    debounce = _typed([100] * 4)
    assert debounce.delay_for(prefix, suffix) == pytest.approx(expected)
    assert debounce.delay_for(prefix, suffix, manual=True) == 0.0
