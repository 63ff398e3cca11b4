"""Immutable 2D integer/float vector used for positions and directions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Union

Number = Union[int, float]


@dataclass(frozen=True, slots=True)
class Vec2:
    """An immutable 2D vector.

    Works with ints (grid coordinates) or floats (continuous positions).
    Hashable, so it can be used as a dict key or set member.
    """

    x: Number = 0
    y: Number = 0

    def __add__(self, other: "Vec2") -> "Vec2":
        return Vec2(self.x + other.x, self.y + other.y)

    def __sub__(self, other: "Vec2") -> "Vec2":
        return Vec2(self.x - other.x, self.y - other.y)

    def __mul__(self, k: Number) -> "Vec2":
        return Vec2(self.x * k, self.y * k)

    __rmul__ = __mul__

    def __neg__(self) -> "Vec2":
        return Vec2(-self.x, -self.y)

    def __iter__(self) -> Iterator[Number]:
        yield self.x
        yield self.y

    def length(self) -> float:
        """Euclidean length."""
        return math.hypot(self.x, self.y)

    def manhattan(self, other: "Vec2") -> Number:
        """Manhattan (taxicab) distance to ``other``."""
        return abs(self.x - other.x) + abs(self.y - other.y)

    def normalized(self) -> "Vec2":
        """Unit vector in the same direction; the zero vector stays zero."""
        n = self.length()
        if n == 0:
            return Vec2(0.0, 0.0)
        return Vec2(self.x / n, self.y / n)


#: The four cardinal unit directions (right, left, down, up), y grows downward.
CARDINALS: tuple[Vec2, ...] = (Vec2(1, 0), Vec2(-1, 0), Vec2(0, 1), Vec2(0, -1))
