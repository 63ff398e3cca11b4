"""gamekit: a small, dependency-free, headless toolkit for building games.

Modules:
    vec   -- immutable :class:`Vec2`
    ecs   -- entity-component-system :class:`World`
    grid  -- tile :class:`Grid` with flood fill and A* pathfinding
    loop  -- fixed-timestep :class:`GameLoop` and :class:`Timer`
    input -- action-based :class:`InputMap`
"""

from .ecs import Entity, World
from .grid import Grid
from .input import InputMap
from .loop import GameLoop, Timer
from .vec import CARDINALS, Vec2

__version__ = "0.1.0"

__all__ = [
    "CARDINALS",
    "Entity",
    "GameLoop",
    "Grid",
    "InputMap",
    "Timer",
    "Vec2",
    "World",
    "__version__",
]
