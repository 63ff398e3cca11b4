"""Device-agnostic input mapping: bind raw keys to named actions.

Feed raw key events (any hashable: strings, key codes) from whatever backend
you use, then query actions. Call :meth:`InputMap.end_frame` once per frame so
"just pressed" / "just released" edges are tracked correctly.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable


class InputMap:
    """Maps raw keys to actions and tracks held / just-pressed / just-released state."""

    def __init__(self, bindings: dict[str, Iterable[Hashable]] | None = None) -> None:
        self._bindings: dict[str, set[Hashable]] = defaultdict(set)
        self._held: set[Hashable] = set()
        self._pressed: set[Hashable] = set()
        self._released: set[Hashable] = set()
        for action, keys in (bindings or {}).items():
            for key in keys:
                self.bind(action, key)

    def bind(self, action: str, key: Hashable) -> None:
        """Bind ``key`` to ``action``. A key may drive several actions."""
        self._bindings[action].add(key)

    def unbind(self, action: str, key: Hashable | None = None) -> None:
        """Remove one binding, or all bindings for ``action`` if ``key`` is None."""
        if key is None:
            self._bindings.pop(action, None)
        else:
            self._bindings[action].discard(key)

    def keys_for(self, action: str) -> frozenset[Hashable]:
        """Keys currently bound to ``action``."""
        return frozenset(self._bindings.get(action, ()))

    def press(self, key: Hashable) -> None:
        """Record a key-down event."""
        if key not in self._held:
            self._held.add(key)
            self._pressed.add(key)

    def release(self, key: Hashable) -> None:
        """Record a key-up event."""
        if key in self._held:
            self._held.discard(key)
            self._released.add(key)

    def is_held(self, action: str) -> bool:
        """True while any key bound to ``action`` is down."""
        return not self._held.isdisjoint(self._bindings.get(action, ()))

    def just_pressed(self, action: str) -> bool:
        """True on the frame a key bound to ``action`` went down."""
        return not self._pressed.isdisjoint(self._bindings.get(action, ()))

    def just_released(self, action: str) -> bool:
        """True on the frame a key bound to ``action`` went up."""
        return not self._released.isdisjoint(self._bindings.get(action, ()))

    def axis(self, negative: str, positive: str) -> int:
        """-1, 0 or +1 from two opposing held actions (e.g. ``"left"``, ``"right"``)."""
        return int(self.is_held(positive)) - int(self.is_held(negative))

    def end_frame(self) -> None:
        """Clear per-frame edge state. Call once after game logic each frame."""
        self._pressed.clear()
        self._released.clear()
