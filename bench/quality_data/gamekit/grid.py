"""Tile grids with walls, neighbour lookup, flood fill, and A* pathfinding."""

from __future__ import annotations

import heapq
from collections import deque
from itertools import count
from typing import Iterable, Iterator

from .vec import CARDINALS, Vec2


class Grid:
    """A rectangular grid of cells; each cell is either open or a wall.

    Coordinates are ``Vec2(x, y)`` with ``0 <= x < width`` and ``0 <= y < height``.
    Movement is 4-directional.
    """

    def __init__(self, width: int, height: int, walls: Iterable[Vec2] = ()) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("grid dimensions must be positive")
        self.width = width
        self.height = height
        self._walls: set[Vec2] = set()
        for w in walls:
            self.set_wall(w)

    @classmethod
    def from_ascii(cls, text: str, wall: str = "#") -> "Grid":
        """Build a grid from lines of text where ``wall`` characters are walls.

        Leading/trailing blank lines are ignored; short lines are padded as open.
        """
        lines = [ln for ln in text.strip("\n").splitlines()]
        if not lines:
            raise ValueError("empty map")
        width = max(len(ln) for ln in lines)
        walls = [
            Vec2(x, y)
            for y, ln in enumerate(lines)
            for x, ch in enumerate(ln)
            if ch == wall
        ]
        return cls(width, len(lines), walls)

    def in_bounds(self, p: Vec2) -> bool:
        """True if ``p`` lies inside the grid."""
        return 0 <= p.x < self.width and 0 <= p.y < self.height

    def is_wall(self, p: Vec2) -> bool:
        """True if ``p`` is a wall. Out-of-bounds cells count as walls."""
        return not self.in_bounds(p) or p in self._walls

    def passable(self, p: Vec2) -> bool:
        """True if ``p`` is in bounds and not a wall."""
        return not self.is_wall(p)

    def set_wall(self, p: Vec2, wall: bool = True) -> None:
        """Make ``p`` a wall (or open it with ``wall=False``)."""
        if not self.in_bounds(p):
            raise IndexError(f"{p} is out of bounds")
        if wall:
            self._walls.add(p)
        else:
            self._walls.discard(p)

    def cells(self) -> Iterator[Vec2]:
        """Iterate every cell in row-major order."""
        for y in range(self.height):
            for x in range(self.width):
                yield Vec2(x, y)

    def neighbors(self, p: Vec2) -> list[Vec2]:
        """Passable 4-connected neighbours of ``p``."""
        return [q for q in (p + d for d in CARDINALS) if self.passable(q)]

    def reachable(self, start: Vec2) -> set[Vec2]:
        """All cells reachable from ``start`` (flood fill). Empty if start is a wall."""
        if not self.passable(start):
            return set()
        seen = {start}
        queue = deque([start])
        while queue:
            for q in self.neighbors(queue.popleft()):
                if q not in seen:
                    seen.add(q)
                    queue.append(q)
        return seen

    def find_path(self, start: Vec2, goal: Vec2) -> list[Vec2] | None:
        """Shortest 4-directional path from ``start`` to ``goal`` using A*.

        Returns the list of cells including both endpoints, ``[start]`` when
        ``start == goal``, or ``None`` if no path exists or an endpoint is blocked.
        """
        if not (self.passable(start) and self.passable(goal)):
            return None
        tie = count()  # stable tie-breaker so heap never compares Vec2s
        frontier: list[tuple[int, int, Vec2]] = [(0, next(tie), start)]
        came_from: dict[Vec2, Vec2 | None] = {start: None}
        cost: dict[Vec2, int] = {start: 0}
        while frontier:
            _, _, cur = heapq.heappop(frontier)
            if cur == goal:
                path = [cur]
                while (prev := came_from[path[-1]]) is not None:
                    path.append(prev)
                return path[::-1]
            for nxt in self.neighbors(cur):
                new_cost = cost[cur] + 1
                if new_cost < cost.get(nxt, new_cost + 1):
                    cost[nxt] = new_cost
                    came_from[nxt] = cur
                    prio = new_cost + int(nxt.manhattan(goal))
                    heapq.heappush(frontier, (prio, next(tie), nxt))
        return None

    def render(self, marks: dict[Vec2, str] | None = None,
               wall: str = "#", floor: str = ".") -> str:
        """Render the grid as text; ``marks`` overrides characters at given cells."""
        marks = marks or {}
        rows = []
        for y in range(self.height):
            row = []
            for x in range(self.width):
                p = Vec2(x, y)
                row.append(marks.get(p, wall if p in self._walls else floor))
            rows.append("".join(row))
        return "\n".join(rows)
