"""A minimal entity-component-system.

Entities are integer ids. Components are arbitrary Python objects stored by
their type, so each entity holds at most one component of a given type.
Systems are callables ``system(world, dt)`` run in registration order.
"""

from __future__ import annotations

from itertools import count
from typing import Any, Callable, Iterator, TypeVar, overload

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

Entity = int
System = Callable[["World", float], None]


class World:
    """Container for entities, their components, and the systems that act on them."""

    def __init__(self) -> None:
        self._ids = count(1)
        self._entities: dict[Entity, dict[type, Any]] = {}
        self._systems: list[System] = []
        self._pending_destroy: set[Entity] = set()

    # -- entities -----------------------------------------------------------

    def spawn(self, *components: Any) -> Entity:
        """Create a new entity with the given components and return its id."""
        eid = next(self._ids)
        self._entities[eid] = {}
        for comp in components:
            self.add(eid, comp)
        return eid

    def destroy(self, entity: Entity) -> None:
        """Mark ``entity`` for removal at the end of the current :meth:`step`.

        Outside of a step, call :meth:`flush` (or the next ``step``) to apply it.
        Deferring keeps iteration inside systems safe.
        """
        if entity in self._entities:
            self._pending_destroy.add(entity)

    def flush(self) -> None:
        """Apply pending destroys immediately."""
        for eid in self._pending_destroy:
            self._entities.pop(eid, None)
        self._pending_destroy.clear()

    def alive(self, entity: Entity) -> bool:
        """True if ``entity`` exists and is not pending destruction."""
        return entity in self._entities and entity not in self._pending_destroy

    def __len__(self) -> int:
        return sum(1 for e in self._entities if e not in self._pending_destroy)

    # -- components ---------------------------------------------------------

    def add(self, entity: Entity, component: Any) -> None:
        """Attach ``component`` to ``entity``, replacing any of the same type."""
        self._require(entity)[type(component)] = component

    def remove(self, entity: Entity, ctype: type) -> None:
        """Detach the component of type ``ctype``; no-op if absent."""
        self._require(entity).pop(ctype, None)

    def get(self, entity: Entity, ctype: type[T]) -> T:
        """Return the ``ctype`` component of ``entity``; raise ``KeyError`` if absent."""
        return self._require(entity)[ctype]

    def try_get(self, entity: Entity, ctype: type[T]) -> T | None:
        """Return the ``ctype`` component of ``entity`` or ``None``."""
        return self._require(entity).get(ctype)

    def has(self, entity: Entity, *ctypes: type) -> bool:
        """True if ``entity`` has every component type in ``ctypes``."""
        comps = self._entities.get(entity)
        return comps is not None and all(c in comps for c in ctypes)

    @overload
    def query(self, a: type[A], /) -> Iterator[tuple[Entity, A]]: ...
    @overload
    def query(self, a: type[A], b: type[B], /) -> Iterator[tuple[Entity, A, B]]: ...
    @overload
    def query(
        self, a: type[A], b: type[B], c: type[C], /
    ) -> Iterator[tuple[Entity, A, B, C]]: ...
    @overload
    def query(self, *ctypes: type) -> Iterator[tuple[Any, ...]]: ...

    def query(self, *ctypes: type) -> Iterator[tuple[Any, ...]]:
        """Yield ``(entity, comp1, comp2, ...)`` for live entities having all ``ctypes``.

        Entities are yielded in creation order. The entity set is snapshotted,
        so spawning/destroying while iterating is safe.
        """
        if not ctypes:
            raise ValueError("query() needs at least one component type")
        for eid, comps in list(self._entities.items()):
            if eid in self._pending_destroy:
                continue
            if all(c in comps for c in ctypes):
                yield (eid, *(comps[c] for c in ctypes))

    # -- systems ------------------------------------------------------------

    def add_system(self, system: System) -> System:
        """Register a system; returns it so this can be used as a decorator."""
        self._systems.append(system)
        return system

    def step(self, dt: float) -> None:
        """Run every system once with timestep ``dt``, then flush destroys."""
        for system in self._systems:
            system(self, dt)
        self.flush()

    def _require(self, entity: Entity) -> dict[type, Any]:
        try:
            return self._entities[entity]
        except KeyError:
            raise KeyError(f"no such entity: {entity}") from None
