# SPDX-License-Identifier: Apache-2.0
"""How long to wait after a keystroke before asking for a completion: adaptive, as in Tabby.

A fixed debounce is wrong for everyone but one typist on one machine. Fast typists fire a
request between every two keys and cancel them all; slow typists wait for nothing; a slow model
adds its latency on top of the wait. So the delay is::

    delay = clamp(rate(context) * typing_interval - latency_weight * latency, min_ms, max_ms)

* ``typing_interval``: the mean gap between the user's recent keystrokes (the last 32; gaps over
  a second are pauses, not typing speed). Until 4 gaps are known, ``base_ms`` stands in for
  the whole product, so a fresh server behaves like a fixed ``debounceMs``.
* ``rate(context)``: between 1.0 and 2.0 times the interval. A request right after ``.``, ``(``,
  a space or a newline, at the end of a line, or at the end of the file is likely to be wanted
  and the user likely to pause there: closer to 1.0. Mid-word, closer to 2.0 (Tabby weights
  these three signals 0.5 / 0.4 / 0.1 and uses rates 1.5 to 3.0; our cancellation is cheap
  end to end, so we can afford to fire earlier).
* ``latency``: an exponential moving average of the daemon's time to first chunk. Half of it
  is subtracted, so that a slow model starts earlier and the total wait the user sees grows
  more slowly than the model's latency, without firing on every keystroke.
* The clamp: 20 ms (below that, two keys typed together still make two requests) to 400 ms
  (above that, the suggestion feels broken rather than considered).

Defaults: ``base_ms`` = 75, Copilot's fixed debounce and the LSP setting ``debounceMs``. A
manual trigger (``InlineCompletionTriggerKind.Invoked``) does not wait at all.

Time is passed in (``observe_keystroke(t)``), never read from a clock here, so tests are exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lspilot.lsp.core.context import current_line_suffix
from lspilot.lsp.core.multiline import CLOSERS_ONLY

__all__ = ["AdaptiveDebounce", "DebounceConfig"]

# Characters after which a completion is most often wanted.
TRIGGER_CHARACTERS = frozenset(".(,:=[{ \n\t>")


@dataclass(frozen=True)
class DebounceConfig:
    base_ms: float = 75.0
    min_ms: float = 20.0
    max_ms: float = 400.0
    # rate * typing interval: min_rate in the most promising context, max_rate in the least.
    min_rate: float = 1.0
    max_rate: float = 2.0
    latency_weight: float = 0.5
    latency_alpha: float = 0.3
    window: int = 32
    min_samples: int = 4
    pause_ms: float = 1000.0
    adaptive: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_ms <= self.max_ms:
            raise ValueError("need 0 <= min_ms <= max_ms")
        if not 0 < self.latency_alpha <= 1:
            raise ValueError("latency_alpha must be in (0, 1]")
        if self.window < 1 or self.min_samples < 1:
            raise ValueError("window and min_samples must be positive")


class AdaptiveDebounce:
    """Keystroke and latency history of one editor, and the delay they imply."""

    def __init__(self, config: DebounceConfig = DebounceConfig()) -> None:
        self.config = config
        self._intervals: deque[float] = deque(maxlen=config.window)
        self._last_keystroke: float | None = None
        self._latency: float | None = None

    def observe_keystroke(self, t: float) -> None:
        """A document change at time ``t`` (seconds, from a monotonic clock)."""
        if self._last_keystroke is not None:
            gap_ms = (t - self._last_keystroke) * 1000.0
            if 0 <= gap_ms <= self.config.pause_ms:
                self._intervals.append(gap_ms)
        self._last_keystroke = t

    def observe_latency(self, ms: float) -> None:
        """The daemon's time to first chunk for a request that was not cancelled."""
        if ms < 0:
            return
        alpha = self.config.latency_alpha
        self._latency = ms if self._latency is None else alpha * ms + (1 - alpha) * self._latency

    @property
    def typing_interval_ms(self) -> float | None:
        """Mean recent gap between keystrokes, or None while there are too few to tell."""
        if len(self._intervals) < self.config.min_samples:
            return None
        return sum(self._intervals) / len(self._intervals)

    @property
    def latency_ms(self) -> float | None:
        return self._latency

    def delay_ms(
        self,
        *,
        last_char: str = "",
        at_line_end: bool = False,
        at_document_end: bool = False,
        manual: bool = False,
    ) -> float:
        """Milliseconds to wait before sending the request for the current cursor.

        ``last_char`` is the character before the cursor; ``at_line_end`` means nothing but
        closers follows the cursor on its line; ``at_document_end`` that only whitespace does.
        """
        if manual:
            return 0.0
        cfg = self.config
        if not cfg.adaptive:
            return cfg.base_ms
        interval = self.typing_interval_ms
        if interval is None:
            target = cfg.base_ms
        else:
            score = (
                0.5 * (last_char in TRIGGER_CHARACTERS and last_char != "")
                + 0.4 * at_line_end
                + 0.1 * at_document_end
            )
            rate = cfg.max_rate - (cfg.max_rate - cfg.min_rate) * score
            target = rate * interval
        if self._latency is not None:
            target -= cfg.latency_weight * self._latency
        return min(max(target, cfg.min_ms), cfg.max_ms)

    def delay_for(self, prefix: str, suffix: str, *, manual: bool = False) -> float:
        """:meth:`delay_ms` with the cursor signals read off the text around the cursor."""
        rest_of_line = current_line_suffix(suffix)
        return self.delay_ms(
            last_char=prefix[-1:],
            at_line_end=CLOSERS_ONLY.fullmatch(rest_of_line) is not None,
            at_document_end=not suffix.strip(),
            manual=manual,
        )
