# SPDX-License-Identifier: Apache-2.0
"""A small LRU of completions, so a keystroke that lands where we have been costs no model call.

Two kinds of hit:

* **exact**: same prefix tail, same suffix head, same versions of the other documents that fed
  the prompt, same model and stop policy (a cursor moved away and back; an undo).
* **typed through**: the user typed the first characters of a suggestion. If the new prefix is
  an old prefix plus ``typed``, the suffix is unchanged and the cached text starts with
  ``typed``, the rest of it is the answer (Copilot and Tabby do this; Tabby by storing one
  entry per typed character, we by probing up to ``max_typed_through`` shorter prefixes, which
  keeps the LRU for distinct completions).

Keys hash a *tail* of the prefix and a *head* of the suffix, not the whole document: an edit
500 lines above the cursor rarely changes the suggestion, and hashing megabytes per keystroke
would. Store what the pre-cache filters return (``postprocess.pre_cache``) and run the
post-cache filters on every hit, since the text around the cursor decides those.

Time is injected (``clock``) so that TTL tests need no sleeping.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["CacheStats", "CompletionCache", "ContextVersions"]

ContextVersions = Mapping[str, int] | Iterable[tuple[str, int]]

_END_CHARS = 32


@dataclass(frozen=True)
class CacheStats:
    """Counters for the bench and the status command."""

    hits: int = 0
    typed_through_hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0


@dataclass(frozen=True)
class _Key:
    prefix_digest: bytes
    suffix_digest: bytes
    ctx_versions: tuple[tuple[str, int], ...]
    model_id: str
    policy: str


@dataclass(frozen=True)
class _Entry:
    text: str
    uri: str | None
    stored_at: float
    # The last characters of the prefix, in clear: a cheap filter before hashing the tail.
    prefix_end: str


_AUTO_CLOSED = ")]}\"'`"
_OPENS = {")": "(", "]": "[", "}": "{", '"': '"', "'": "'", "`": "`"}


def _suffixes_before_auto_close(suffix: str, typed: str) -> list[str]:
    """The suffix as it may have been before typing ``typed``: itself, and without the
    closers at its start that an editor inserts for openers in ``typed`` (at most 2)."""
    candidates = [suffix]
    for k in (1, 2):
        head = suffix[:k]
        if len(head) < k or any(ch not in _AUTO_CLOSED for ch in head):
            break
        if all(_OPENS[ch] in typed for ch in head):
            candidates.append(suffix[k:])
    return candidates


def _digest(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a broken file must not make the cache raise.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _normalize(ctx_versions: ContextVersions | None) -> tuple[tuple[str, int], ...]:
    if ctx_versions is None:
        return ()
    items = ctx_versions.items() if isinstance(ctx_versions, Mapping) else ctx_versions
    return tuple(sorted((str(uri), int(version)) for uri, version in items))


class CompletionCache:
    """Bounded LRU with a TTL. Not thread-safe: it lives on the server's event loop.

    Defaults: 256 entries (a few KB each) and 5 minutes, after Tabby's 100 / 5 min, with room for
    several open files; a 4000-character prefix tail and 1000-character suffix head (the code a
    small FIM model attends to most); typing through up to 50 characters, as Tabby.
    """

    def __init__(
        self,
        max_entries: int = 256,
        ttl_s: float = 300.0,
        *,
        prefix_tail_chars: int = 4000,
        suffix_head_chars: int = 1000,
        max_typed_through: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._prefix_tail = prefix_tail_chars
        self._suffix_head = suffix_head_chars
        self._max_typed = max_typed_through
        self._clock = clock
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        # How many entries end their prefix with each string of _END_CHARS characters: a
        # typed-through probe is only worth a hash when some entry's prefix ends like it.
        self._prefix_ends: Counter[str] = Counter()
        self._end_chars = min(_END_CHARS, prefix_tail_chars)
        self._stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        return self._stats

    def _key(
        self,
        prefix: str,
        suffix: str,
        versions: tuple[tuple[str, int], ...],
        model_id: str,
        policy: str,
    ) -> _Key:
        return _Key(
            _digest(prefix[-self._prefix_tail :] if self._prefix_tail else ""),
            _digest(suffix[: self._suffix_head]),
            versions,
            model_id,
            policy,
        )

    def store(
        self,
        prefix: str,
        suffix: str,
        ctx_versions: ContextVersions | None,
        text: str,
        *,
        model_id: str = "",
        policy: str = "",
        uri: str | None = None,
    ) -> None:
        """Remember ``text`` as the completion at (prefix, suffix). ``uri`` is the document it
        was made in, for :meth:`invalidate_uri`; ``ctx_versions`` maps the URIs of the other
        documents whose text went into the prompt (snippets) to their versions."""
        if not text:
            return
        key = self._key(prefix, suffix, _normalize(ctx_versions), model_id, policy)
        self._remove(key)
        end = prefix[len(prefix) - self._end_chars :]
        self._entries[key] = _Entry(text, uri, self._clock(), end)
        self._prefix_ends[end] += 1
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))
            self._bump(evictions=1)

    def _remove(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._prefix_ends[entry.prefix_end] -= 1
            if not self._prefix_ends[entry.prefix_end]:
                del self._prefix_ends[entry.prefix_end]

    def lookup(
        self,
        prefix: str,
        suffix: str,
        ctx_versions: ContextVersions | None,
        *,
        model_id: str = "",
        policy: str = "",
    ) -> str | None:
        """The cached completion at this cursor, the remainder of one typed through, or None.

        Typing through tolerates brackets and quotes that the editor auto-inserted after the
        cursor meanwhile (typing ``(`` also put a ``)`` in the suffix); the remainder may then
        repeat them, which ``postprocess.post_cache`` trims.
        """
        versions = _normalize(ctx_versions)
        limit = min(self._max_typed, len(prefix))
        for typed_len in range(limit + 1):
            base = prefix[: len(prefix) - typed_len]
            if base[len(base) - self._end_chars :] not in self._prefix_ends:
                continue
            typed = prefix[len(prefix) - typed_len :]
            for old_suffix in _suffixes_before_auto_close(suffix, typed):
                entry = self._get(self._key(base, old_suffix, versions, model_id, policy))
                if entry is None or not entry.text.startswith(typed):
                    continue
                if len(entry.text) > typed_len:
                    if typed_len:
                        self._bump(typed_through_hits=1)
                    else:
                        self._bump(hits=1)
                    return entry.text[typed_len:]
        self._bump(misses=1)
        return None

    def _get(self, key: _Key) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.stored_at > self._ttl_s:
            self._remove(key)
            self._bump(expirations=1)
            return None
        self._entries.move_to_end(key)
        return entry

    def invalidate_uri(self, uri: str) -> int:
        """Forget everything made in ``uri`` or from ``uri``'s text (closed or renamed document).

        Entries made with other versions of a snippet's document already miss, since the
        versions are part of the key; this frees them early. Returns how many were dropped.
        """
        doomed = [
            key
            for key, entry in self._entries.items()
            if entry.uri == uri or any(ctx_uri == uri for ctx_uri, _ in key.ctx_versions)
        ]
        for key in doomed:
            self._remove(key)
        self._bump(invalidations=len(doomed))
        return len(doomed)

    def clear(self) -> None:
        """Forget everything (the model changed)."""
        self._entries.clear()
        self._prefix_ends.clear()

    def _bump(self, **deltas: int) -> None:
        current = self._stats
        self._stats = CacheStats(
            **{
                name: getattr(current, name) + deltas.get(name, 0)
                for name in CacheStats.__dataclass_fields__
            }
        )
