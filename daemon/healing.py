# SPDX-License-Identifier: Apache-2.0
"""Token healing: let the model re-choose the token the cursor sits in.

Why: the prompt ends wherever the cursor is, usually mid-identifier. ``from .read|`` tokenizes as
``from`` ``␣.`` ``read``, but in training ``reader`` was one token, so a model continuing after
``read`` has rarely seen that boundary and tends to start a new word. Healing backs the prompt up
to the last clean token boundary (drops ``read``) and constrains the first generated tokens to
reproduce the dropped text, so the model can pick ``reader`` and then ``␣import␣read``. The daemon
strips the reproduced text before it reaches the editor (``IncrementalDetokenizer(strip_prefix=)``).

Everything works on token *bytes*, not decoded strings: byte-level BPE tokens can hold half a
UTF-8 character, and SentencePiece pieces carry their leading space as ``▁``, which a per-token
``decode`` would strip. The byte table for a vocabulary is built once per tokenizer and cached;
lookups are bisections over the sorted byte strings, so a 151k vocabulary costs about a second
once and microseconds per step.
"""

from __future__ import annotations

import bisect
import json
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """Names of the backend decoder's parts, e.g. {"ByteLevel"} or {"Replace", "ByteFallback"}."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder])
    return {str(p.get("type")) for p in parts if isinstance(p, dict)}


def _piece_bytes_sentencepiece(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("▁", " ").encode("utf-8")


@dataclass(frozen=True)
class TokenTable:
    """Every healable token's bytes, sorted for prefix search.

    Special tokens, and added tokens other than whitespace runs (CodeGen's), are left out: a
    sentinel or control token must never be chosen to reproduce user text.
    """

    keys: tuple[bytes, ...]  # sorted
    ids: tuple[int, ...]  # ids[i] is the token whose bytes are keys[i]
    by_bytes: dict[bytes, tuple[int, ...]] = field(repr=False)
    id_bytes: dict[int, bytes] = field(repr=False)

    @staticmethod
    def build(tokenizer: Any) -> TokenTable:
        kinds = _decoder_kinds(tokenizer)
        special = set(tokenizer.all_special_ids)
        added = {int(i): t for t, i in tokenizer.get_added_vocab().items()}
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        byte_decoder = _gpt2_byte_decoder() if "ByteLevel" in kinds else None
        sentencepiece = byte_decoder is None and bool(kinds & {"Metaspace", "Replace"})
        id_bytes: dict[int, bytes] = {}
        for tid, piece in enumerate(pieces):
            if tid in special or piece is None:
                continue
            if tid in added:
                if added[tid].strip() == "" and added[tid]:
                    id_bytes[tid] = added[tid].encode("utf-8")
                continue
            if byte_decoder is not None:
                try:
                    data = bytes(byte_decoder[c] for c in piece)
                except KeyError:
                    continue
            elif sentencepiece:
                data = _piece_bytes_sentencepiece(piece)
            else:
                data = tokenizer.decode([tid]).encode("utf-8")
            if data:
                id_bytes[tid] = data
        order = sorted(id_bytes.items(), key=lambda kv: (kv[1], kv[0]))
        by_bytes: dict[bytes, list[int]] = {}
        for tid, data in order:
            by_bytes.setdefault(data, []).append(tid)
        return TokenTable(
            keys=tuple(d for _, d in order),
            ids=tuple(t for t, _ in order),
            by_bytes={k: tuple(v) for k, v in by_bytes.items()},
            id_bytes=id_bytes,
        )

    def _range(self, prefix: bytes) -> tuple[int, int]:
        """Index range of the keys that start with ``prefix``."""
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, prefix + b"\xff" * 8, lo)
        while hi < len(self.keys) and self.keys[hi].startswith(prefix):
            hi += 1  # keys that continue with 0xff bytes beyond the probe (not valid UTF-8)
        return lo, hi

    def starting_with(self, prefix: bytes) -> tuple[int, ...]:
        lo, hi = self._range(prefix)
        return self.ids[lo:hi]

    def is_extendable(self, data: bytes) -> bool:
        """True when some token is strictly longer than ``data`` and starts with it."""
        lo, hi = self._range(data)
        return any(len(self.keys[i]) > len(data) for i in range(lo, min(hi, lo + 64)))

    def consistent_with(self, remaining: bytes) -> list[int]:
        """Tokens that start with ``remaining`` or are a non-empty proper prefix of it."""
        allowed = list(self.starting_with(remaining))
        for n in range(1, len(remaining)):
            allowed.extend(self.by_bytes.get(remaining[:n], ()))
        return allowed


_TABLES: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()


def token_table(tokenizer: Any) -> TokenTable:
    """The cached byte table of ``tokenizer`` (built on first use)."""
    try:
        return _TABLES[tokenizer]
    except KeyError:
        table = TokenTable.build(tokenizer)
        _TABLES[tokenizer] = table
        return table


@dataclass(frozen=True)
class Healing:
    """The prompt ids to keep and the text the first generated tokens must reproduce."""

    kept_ids: tuple[int, ...]
    removed_text: str = ""

    @property
    def healed(self) -> bool:
        return bool(self.removed_text)


def heal(
    tokenizer: Any,
    prefix_ids: Sequence[int],
    *,
    max_tokens: int = 1,
    banned: Collection[int] = frozenset(),
) -> Healing:
    """Back ``prefix_ids`` up over at most ``max_tokens`` trailing tokens that a longer token
    could replace.

    A token is removed only if its bytes (together with the tokens already removed) are a proper
    prefix of some vocabulary token, decode to whole characters, and it is not a special token
    or one of ``banned`` (pass the FIM sentinels and stop ids: CodeLlama's are plain vocabulary
    pieces the table cannot tell apart). With nothing to heal, ``removed_text`` is "" and
    ``kept_ids`` is the input.
    """
    table = token_table(tokenizer)
    ids = tuple(int(i) for i in prefix_ids)
    removed = b""
    best = len(ids)
    for k in range(1, min(max_tokens, len(ids)) + 1):
        data = table.id_bytes.get(ids[-k])
        if data is None or ids[-k] in banned:
            break
        candidate = data + removed
        if not table.is_extendable(candidate):
            break
        removed = candidate
        try:
            removed.decode("utf-8")
        except UnicodeDecodeError:
            continue  # half a character: only a further token can make it whole
        best = len(ids) - k
    if best == len(ids):
        return Healing(ids, "")
    text = b"".join(table.id_bytes[i] for i in ids[best:]).decode("utf-8")
    return Healing(ids[:best], text)


class HealingConstraint:
    """``TokenConstraint`` (daemon/backends/base.py) that makes generation reproduce
    ``removed_text`` first.

    Allowed next: tokens whose bytes start with the part of ``removed_text`` not yet reproduced,
    or are a non-empty proper prefix of it, never one of ``banned``. ``None`` (unconstrained) once
    it is reproduced, or if the generated tokens somehow left it (a backend that ignored the
    constraint).
    """

    def __init__(
        self, tokenizer: Any, removed_text: str, *, banned: Collection[int] = frozenset()
    ) -> None:
        self._table = token_table(tokenizer)
        self._target = removed_text.encode("utf-8")
        self._banned = frozenset(banned)

    @property
    def removed_text(self) -> str:
        return self._target.decode("utf-8")

    def allowed_ids(self, generated: list[int]) -> list[int] | None:
        produced = b"".join(self._table.id_bytes.get(t, b"\x00") for t in generated)
        if len(produced) >= len(self._target) or not self._target.startswith(produced):
            return None
        allowed = self._table.consistent_with(self._target[len(produced) :])
        if self._banned:
            allowed = [t for t in allowed if t not in self._banned]
        return allowed
