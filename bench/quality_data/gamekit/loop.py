"""Headless fixed-timestep game loop and countdown timers.

The loop never sleeps or reads the wall clock unless you ask it to, which makes
simulations deterministic and easy to test: feed it frame times with
:meth:`GameLoop.advance`, or run a set number of ticks with :meth:`GameLoop.run`.
"""

from __future__ import annotations

import time
from typing import Callable

UpdateFn = Callable[[float], None]


class Timer:
    """A countdown timer that fires a callback when it elapses.

    With ``repeat=True`` it re-arms itself and can fire several times in one
    large :meth:`tick` (catch-up), keeping long-run timing exact.
    """

    def __init__(self, duration: float, callback: Callable[[], None] | None = None,
                 repeat: bool = False) -> None:
        if duration <= 0:
            raise ValueError("duration must be positive")
        self.duration = duration
        self.callback = callback
        self.repeat = repeat
        self.remaining = duration
        self.finished = False

    def tick(self, dt: float) -> int:
        """Advance by ``dt`` seconds; return how many times the timer fired."""
        if self.finished:
            return 0
        self.remaining -= dt
        fired = 0
        while self.remaining <= 1e-12:
            fired += 1
            if self.callback is not None:
                self.callback()
            if not self.repeat:
                self.finished = True
                self.remaining = 0.0
                break
            self.remaining += self.duration
        return fired

    def reset(self) -> None:
        """Restart the countdown from the full duration."""
        self.remaining = self.duration
        self.finished = False

    @property
    def progress(self) -> float:
        """Fraction of the current cycle elapsed, in ``[0, 1]``."""
        return 1.0 - max(self.remaining, 0.0) / self.duration


class GameLoop:
    """Fixed-timestep loop: real elapsed time is accumulated and consumed in
    equal ``1 / tick_rate`` steps, so game logic is frame-rate independent.

    ``update(dt)`` is called once per fixed step. Timers added with
    :meth:`every` / :meth:`after` are ticked after ``update`` on each step.
    """

    def __init__(self, update: UpdateFn, tick_rate: float = 60.0,
                 max_steps_per_advance: int = 8) -> None:
        if tick_rate <= 0:
            raise ValueError("tick_rate must be positive")
        self.update = update
        self.dt = 1.0 / tick_rate
        self.max_steps_per_advance = max_steps_per_advance
        self.ticks = 0
        self.time = 0.0
        self.running = False
        self._accumulator = 0.0
        self._timers: list[Timer] = []

    @property
    def alpha(self) -> float:
        """Leftover fraction of a step, in ``[0, 1)``, for render interpolation."""
        return self._accumulator / self.dt

    def every(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` every ``seconds`` of simulated time."""
        t = Timer(seconds, callback, repeat=True)
        self._timers.append(t)
        return t

    def after(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` once after ``seconds`` of simulated time."""
        t = Timer(seconds, callback)
        self._timers.append(t)
        return t

    def step(self) -> None:
        """Run exactly one fixed step: ``update``, advance the clock, then timers.

        Timer callbacks therefore observe the post-step ``ticks`` / ``time``.
        """
        self.update(self.dt)
        self.ticks += 1
        self.time = self.ticks * self.dt
        for t in list(self._timers):
            t.tick(self.dt)
        self._timers = [t for t in self._timers if not t.finished]

    def advance(self, elapsed: float) -> int:
        """Feed ``elapsed`` real seconds; run as many fixed steps as fit.

        At most ``max_steps_per_advance`` steps run per call (the rest of the
        backlog is dropped) to avoid a "spiral of death". Returns steps run.
        """
        if elapsed < 0:
            raise ValueError("elapsed must be non-negative")
        self._accumulator += elapsed
        steps = 0
        while self._accumulator + 1e-12 >= self.dt:
            if steps >= self.max_steps_per_advance:
                self._accumulator = 0.0
                break
            self.step()
            self._accumulator -= self.dt
            steps += 1
        self._accumulator = max(self._accumulator, 0.0)
        return steps

    def run(self, ticks: int) -> None:
        """Run ``ticks`` fixed steps immediately (headless / tests)."""
        self.running = True
        for _ in range(ticks):
            if not self.running:
                break
            self.step()
        self.running = False

    def run_realtime(self, duration: float | None = None,
                     clock: Callable[[], float] = time.perf_counter,
                     sleep: Callable[[float], None] = time.sleep) -> None:
        """Run against a real clock until :meth:`stop` or ``duration`` seconds.

        ``clock`` and ``sleep`` are injectable for testing.
        """
        self.running = True
        start = last = clock()
        while self.running:
            now = clock()
            self.advance(now - last)
            last = now
            if duration is not None and now - start >= duration:
                break
            sleep(max(0.0, self.dt - self._accumulator))
        self.running = False

    def stop(self) -> None:
        """Ask :meth:`run` / :meth:`run_realtime` to exit after the current step."""
        self.running = False
