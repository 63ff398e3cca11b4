# SPDX-License-Identifier: Apache-2.0
"""Building a FIM prompt under a token budget, from ids.

Why this shape:

- **Sentinels are ids, never text.** Prefix, suffix and snippets are tokenized separately
  (``add_special_tokens=False``) and joined with the sentinel ids of ``FimFormat``. Truncation
  only ever shortens the text segments, so a long prefix cannot push a sentinel out of the
  window (Tabby tokenized the assembled string and cut it, losing ``<fim_prefix>``), and code that
  contains the text ``<fim_middle>`` stays text.
- **Budget split.** The suffix gets at most a quarter of ``budget``; the prefix gets the rest;
  snippets only get what the untruncated prefix leaves over. The caller passes
  ``budget = context_window - max_new_tokens``.
- **Cuts at line boundaries, on a coarse grid.** The prefix loses lines at its start, the suffix at
  its end. The prefix cut is chosen among every ``cut_grid_lines``-th line of the text given (line
  numbers count from the start of ``prefix``, so pass the whole text before the cursor), and the
  first grid line that fits wins. While the user types, the cut stays put until the prefix has
  grown by roughly a grid's worth of tokens, so the prompt's leading tokens, and the KV cache
  computed for them, stay reusable from one keystroke to the next. The price is up to
  ``cut_grid_lines`` lines of unused budget. A single line longer than the budget is cut by
  tokens as a last resort.
- **Snippet budget is quantised** (``SNIPPET_GRID`` tokens of prefix growth, or an eighth of the
  budget if smaller) for the same reason: snippets sit at the front of the prompt, so
  re-truncating them invalidates the whole cache.
- **Cost.** Tokenizing is nearly all of it (about 1 µs a character on our CPU). A cut tokenizes a
  window of about six characters per token of budget once, with offsets, and reuses those ids
  when a token starts exactly at the chosen line; the suffix cut is remembered while the suffix
  does not change. Roughly 15-20 ms for a 2k budget on the shared 2-core machine.
- **Layouts.** PSM: ``[bos] PRE prefix SUF suffix MID``. SPM (the FIM paper's variant 2, as
  BigCode and Meta's CodeLlama reference build it): ``[bos] PRE SUF suffix MID prefix``. In SPM
  the prefix comes last, so typing only appends to the prompt and everything before the cursor
  (suffix included) stays cached, where PSM must re-run the suffix after every keystroke. SPM is
  used only where ``fmt.supports_spm`` (StarCoder/SantaCoder, CodeLlama); elsewhere ``layout="spm"``
  falls back to PSM and ``Prompt.layout`` says which was used. Quality is close for models trained
  on both; PSM stays the default because every FIM model knows it.
- **SentencePiece leading space.** Meta encodes CodeLlama's prefix with the dummy "▁" and the
  suffix without it (``encode_infilling``); ``_encode(continuation=True)`` reproduces the latter.
- **Left to right** (``fmt.name == "none"``): the prompt is ``[bos]`` + snippets + prefix. With a
  FIM format and an empty suffix we still use FIM: models see that at end of file in training.
- **Token healing** (``heal=True``): the last prefix token is removed when a longer token could
  replace it (see ``healing.py``); ``Prompt.healing.removed_text`` must be reproduced first, which
  ``Prompt.constraint`` enforces and ``IncrementalDetokenizer(strip_prefix=...)`` hides.
"""

from __future__ import annotations

import bisect
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .fim import FimFormat
from .healing import Healing, HealingConstraint
from .healing import heal as heal_ids

LAYOUTS = ("psm", "spm")
# Tokens of prefix growth between changes of the snippet budget: at most this, and at most an
# eighth of the budget so small budgets still leave snippets some room.
SNIPPET_GRID = 256
# Encoded with a dummy prefix, "\n" is two pieces that no BPE merge crosses ("▁", "<0x0A>").
_ANCHOR = "\n"


@dataclass(frozen=True)
class Prompt:
    """A ready prompt and how it was cut.

    Counts are tokens; ``prefix_start``/``suffix_end`` are character offsets into the arguments.
    """

    ids: tuple[int, ...]
    prefix_tokens: int
    suffix_tokens: int
    snippet_tokens: int  # snippet text and their file/comment headers
    prefix_truncated: bool
    suffix_truncated: bool
    layout: str  # "psm", "spm" or "l2r"
    prefix_start: int = 0  # prefix[prefix_start:] is in the prompt (before healing)
    suffix_end: int = 0  # suffix[:suffix_end] is in the prompt
    snippets_used: int = 0  # how many of the given snippets made it in (possibly shortened)
    healing: Healing | None = None
    constraint: HealingConstraint | None = None

    @property
    def removed_text(self) -> str:
        """Text cut from the prompt by healing, which generation reproduces first."""
        return self.healing.removed_text if self.healing else ""


class PromptBudgetError(ValueError):
    """The budget cannot hold even the sentinels."""


_GUARDS: weakref.WeakKeyDictionary[Any, re.Pattern[str] | None] = weakref.WeakKeyDictionary()


def _guard_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A regex matching the text of the tokenizer's added tokens (sentinels, EOS, chat markers).

    Tokenizers match added tokens in raw text even with ``special: false`` (Qwen's and DeepSeek's
    FIM tokens), so user code containing ``<|fim_middle|>`` would otherwise smuggle a sentinel into
    the prompt. Single characters (DeepSeek's added ``õ``...) and whitespace runs (CodeGen's) are
    ordinary text and not guarded.
    """
    if tokenizer in _GUARDS:
        return _GUARDS[tokenizer]
    texts = [t for t in tokenizer.get_added_vocab() if len(t) > 1 and t.strip()]
    if "▁<PRE>" in tokenizer.get_vocab():  # CodeLlama: sentinels are plain pieces, " <PRE>" hits
        texts += ["<PRE>", "<SUF>", "<MID>", "<EOT>"]
    texts.sort(key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) for t in texts)) if texts else None
    _GUARDS[tokenizer] = pattern
    return pattern


def _raw_encode(tokenizer: Any, text: str, *, continuation: bool, dummy: bool) -> list[int]:
    if not (continuation and dummy):
        return list(tokenizer.encode(text, add_special_tokens=False))
    anchor = tokenizer.encode(_ANCHOR, add_special_tokens=False)
    ids = tokenizer.encode(_ANCHOR + text, add_special_tokens=False)
    if ids[: len(anchor)] == anchor:
        return list(ids[len(anchor) :])
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode(tokenizer: Any, text: str, *, continuation: bool, dummy: bool) -> list[int]:
    """Token ids of ``text`` as plain text; with ``continuation`` and a dummy-prefix tokenizer,
    without the leading "▁" a SentencePiece model adds at the start of every encoded text.

    Text that spells an added token is split after its first character and the pieces encoded
    apart, so it can never become the control token.
    """
    if not text:
        return []
    pattern = _guard_pattern(tokenizer)
    if pattern is None or pattern.search(text) is None:
        return _raw_encode(tokenizer, text, continuation=continuation, dummy=dummy)
    cuts = [0] + [m.start() + 1 for m in pattern.finditer(text)] + [len(text)]
    ids: list[int] = []
    for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        if a < b:
            more = continuation or k > 0
            ids += _raw_encode(tokenizer, text[a:b], continuation=more, dummy=dummy)
    return ids


def line_starts(text: str, lo: int = 0) -> list[int]:
    """Offsets where a line starts in ``text[lo:]`` (``lo`` included, the text's end excluded)."""
    starts = [lo]
    i = text.find("\n", lo)
    while i != -1:
        if i + 1 < len(text):
            starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


def _token_starts(tokenizer: Any, text: str) -> tuple[list[int], list[int]] | None:
    """Ids and start offsets of the plain encoding of ``text`` in one pass, or None for
    tokenizers without offsets (slow tokenizers)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        return None
    return list(enc["input_ids"]), [int(start) for start, _ in enc["offset_mapping"]]


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    starts: list[int] | None  # start offset of each token of the plain encoding, if known
    aligned: bool  # starts[i] belongs to ids[i] (one plain pass gave both)


def _encode_with_starts(tokenizer: Any, text: str, *, continuation: bool, dummy: bool) -> _Encoded:
    """``_encode(text)`` and, where one tokenizer pass gives both, each token's start offset.

    Tokenizing is the whole cost of prompt building (about 1 µs a character), so the common
    case (no guarded text, no SentencePiece continuation) tokenizes once, not twice.
    """
    pattern = _guard_pattern(tokenizer)
    plain = not (continuation and dummy) and (pattern is None or pattern.search(text) is None)
    both = _token_starts(tokenizer, text) if plain and text else None
    if both is not None:
        return _Encoded(both[0], both[1], True)
    ids = _encode(tokenizer, text, continuation=continuation, dummy=dummy)
    raw = _token_starts(tokenizer, text) if text else None
    return _Encoded(ids, raw[1] if raw is not None else None, False)


@dataclass(frozen=True)
class Cut:
    """The ids kept from one text segment and where the text was cut."""

    ids: tuple[int, ...]
    start: int  # prefix: chars dropped at the start; suffix: chars kept
    truncated: bool


# Characters of text tokenized per token of budget before a cut is searched; code averages
# 3-4 characters a token. The window grows when it turns out to hold too few tokens, so this
# only bounds the work on huge files (tokenizing 1 MB takes most of a second).
_WINDOW_CHARS_PER_TOKEN = 6


def cut_prefix(
    tokenizer: Any, text: str, limit: int, *, grid: int, continuation: bool, dummy: bool
) -> Cut:
    """Keep the end of ``text`` within ``limit`` tokens, cutting at the first line of a grid of
    ``grid`` lines (counted from the start of ``text``) that fits, else at any line start, else
    inside the last line."""
    enc = lambda s: _encode(tokenizer, s, continuation=continuation, dummy=dummy)  # noqa: E731
    if limit <= 0 or not text:
        return Cut((), len(text), bool(text))
    grid = max(grid, 1)
    window = max(limit * _WINDOW_CHARS_PER_TOKEN, 4096)
    while True:
        lo = 0
        if len(text) > window:
            first = text.find("\n", len(text) - window - 1) + 1
            line_no = text.count("\n", 0, first)
            # Start the window on a grid line, so the search below matches a full search.
            while first and line_no % grid:
                first = text.find("\n", first) + 1
                line_no += 1
            lo = first if 0 < first < len(text) else 0
        encoded = _encode_with_starts(tokenizer, text[lo:], continuation=continuation, dummy=dummy)
        ids, token_starts = encoded.ids, encoded.starts
        if len(ids) <= limit:
            if lo == 0:
                return Cut(tuple(ids), 0, False)
            window *= 2  # the window held too few tokens to need the cut: widen it
            continue
        break
    starts = line_starts(text, lo)
    base_line = text.count("\n", 0, lo)

    def estimate(c: int) -> int:
        if token_starts is None or len(token_starts) != len(ids):
            return len(enc(text[c:]))
        return len(token_starts) - bisect.bisect_left(token_starts, c - lo)

    def tail(c: int) -> list[int]:
        """The ids of ``text[c:]``. Where a token of the window starts exactly at ``c``, a
        left-to-right regex pre-tokenizer (every byte-level BPE) splits the rest of the text
        the same way whether or not it starts there, so the window's ids are reused; a
        SentencePiece dummy space or a guarded split forces a fresh encoding."""
        if encoded.aligned and not dummy and token_starts is not None:
            k = bisect.bisect_left(token_starts, c - lo)
            if k < len(token_starts) and token_starts[k] == c - lo:
                return ids[k:]
        return enc(text[c:])

    grid_points = [c for i, c in enumerate(starts) if (base_line + i) % grid == 0]
    for candidates in (grid_points, starts):
        for c in candidates:
            if c == lo or estimate(c) > limit + 2:
                continue
            exact = tail(c)
            if len(exact) <= limit:
                return Cut(tuple(exact), c, True)
    # The last line alone is over the limit: keep its last ``limit`` tokens.
    last = enc(text[starts[-1] :])
    return Cut(tuple(last[-limit:]), starts[-1], True)  # start is approximate here


# The suffix does not change while the user types on one line, so its cut is remembered.
_SUFFIX_CUTS: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, int, bool], Cut]] = (
    weakref.WeakKeyDictionary()
)
_SUFFIX_CACHE_SIZE = 8


def cut_suffix(tokenizer: Any, text: str, limit: int, *, dummy: bool) -> Cut:
    """Keep the start of ``text`` within ``limit`` tokens, cutting after the last whole line
    that fits, else inside the first line. Remembers the last few results per tokenizer."""
    cache = _SUFFIX_CUTS.setdefault(tokenizer, OrderedDict())
    key = (text, limit, dummy)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cut = _cut_suffix(tokenizer, text, limit, dummy=dummy)
    cache[key] = cut
    if len(cache) > _SUFFIX_CACHE_SIZE:
        cache.popitem(last=False)
    return cut


def _cut_suffix(tokenizer: Any, text: str, limit: int, *, dummy: bool) -> Cut:
    enc = lambda s: _encode(tokenizer, s, continuation=True, dummy=dummy)  # noqa: E731
    if limit <= 0 or not text:
        return Cut((), 0, bool(text))
    window = max(limit * _WINDOW_CHARS_PER_TOKEN, 4096)
    while True:
        hi = len(text)
        if len(text) > window:
            hi = text.find("\n", window) + 1 or len(text)
        encoded = _encode_with_starts(tokenizer, text[:hi], continuation=True, dummy=dummy)
        ids, token_starts = encoded.ids, encoded.starts
        if len(ids) <= limit:
            if hi == len(text):
                return Cut(tuple(ids), len(text), False)
            window *= 2
            continue
        break
    ends = [e for e in line_starts(text[:hi]) if e > 0]  # a line ends where the next starts
    for e in reversed(ends):
        if token_starts is not None and bisect.bisect_left(token_starts, e) > limit + 2:
            continue
        exact = enc(text[:e])
        if len(exact) <= limit:
            return Cut(tuple(exact), e, True)
    return Cut(tuple(ids[:limit]), 0, True)  # first line alone is too long: cut by tokens


def comment_block(path: str, text: str, comment: str) -> str:
    """A snippet as a comment block, the form Copilot-style clients use for other files."""
    lines = [f"{comment} Compare this snippet from {path}:" if path else f"{comment} Snippet:"]
    lines += [f"{comment} {line}".rstrip() for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _snippet_segments(
    tokenizer: Any, fmt: FimFormat, snippets: Sequence[tuple[str, str]], limit: int, comment: str
) -> tuple[list[int], int]:
    """Ids of as many snippets as fit in ``limit`` (the last one cut at a line), and how many."""
    out: list[int] = []
    used = 0
    for path, text in snippets:
        room = limit - len(out)
        if room <= 0:
            break
        if fmt.file_sep_id is not None:  # repo-level: <file_sep>path\ncontent
            head = [fmt.file_sep_id] + _encode(
                tokenizer, f"{path}\n", continuation=False, dummy=fmt.dummy_prefix_space
            )
            body_text = text if text.endswith("\n") or fmt.name != "qwen" else text + "\n"
        else:
            head = []
            body_text = comment_block(path, text, comment)
        body = cut_suffix(tokenizer, body_text, room - len(head), dummy=fmt.dummy_prefix_space)
        if not body.ids or len(head) + len(body.ids) > room:
            break
        out += head + list(body.ids)
        used += 1
    return out, used


def _file_headers(tokenizer: Any, fmt: FimFormat, path: str) -> tuple[list[int], list[int]]:
    """Ids naming the current file in repo-level formats: (before the FIM block, before the
    prefix text). Qwen2.5-Coder: ``<|file_sep|>path\n<|fim_prefix|>...``; StarCoder2:
    ``<file_sep><fim_prefix>path\n...``."""
    if fmt.file_sep_id is None or not fmt.is_fim:
        return [], []
    named = _encode(tokenizer, f"{path}\n", continuation=False, dummy=fmt.dummy_prefix_space)
    if fmt.name == "qwen":
        return [fmt.file_sep_id, *named], []
    return [fmt.file_sep_id], (named if path else [])


def _healed(
    tokenizer: Any, fmt: FimFormat, prefix_ids: list[int]
) -> tuple[list[int], Healing | None, HealingConstraint | None]:
    """The prefix ids after token healing, with what the first generated tokens must redo."""
    banned = fmt.stop_ids | set(fmt.prefix_ids + fmt.suffix_ids + fmt.middle_ids)
    healing = heal_ids(tokenizer, prefix_ids, banned=banned)
    if not healing.healed:
        return prefix_ids, None, None
    constraint = HealingConstraint(tokenizer, healing.removed_text, banned=banned)
    return list(healing.kept_ids), healing, constraint


def _assemble(
    fmt: FimFormat, layout: str, front: list[int], lead: list[int], prefix: list[int],
    suffix: list[int],
) -> list[int]:  # fmt: skip
    """Join the segments in ``layout`` order. ``front``: repo-level context before the FIM block;
    ``lead``: text that starts the prefix segment (comment-block snippets, StarCoder2's path)."""
    bos = [fmt.bos_id] if fmt.bos_id is not None else []
    pre, suf, mid = list(fmt.prefix_ids), list(fmt.suffix_ids), list(fmt.middle_ids)
    if layout == "l2r":
        return bos + lead + prefix
    if layout == "spm":
        return bos + front + pre + suf + suffix + mid + lead + prefix
    return bos + front + pre + lead + prefix + suf + suffix + mid


def build_prompt(
    tokenizer: Any,
    fmt: FimFormat,
    prefix: str,
    suffix: str,
    snippets: Sequence[tuple[str, str]] = (),
    *,
    budget: int,
    layout: str = "psm",
    heal: bool = False,
    path: str = "",
    comment: str = "#",
    cut_grid_lines: int = 16,
) -> Prompt:
    """Assemble the prompt ids for one completion at the end of ``prefix``.

    ``snippets`` are ``(path, text)`` pairs, most relevant first; ``path`` names the current file
    for repo-level formats; ``comment`` is the line-comment marker of the language, used when the
    model has no file separator. ``len(Prompt.ids) <= budget`` always holds.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    dummy = fmt.dummy_prefix_space
    used_layout = "l2r" if not fmt.is_fim else (layout if fmt.supports_spm else "psm")
    overhead = (fmt.bos_id is not None) + len(fmt.prefix_ids + fmt.suffix_ids + fmt.middle_ids)
    if budget < overhead + 1:
        raise PromptBudgetError(f"budget {budget} cannot hold the {overhead} sentinel tokens")

    # 1. The suffix takes at most a quarter, the prefix the rest.
    suffix_cut = Cut((), 0, bool(suffix))
    if fmt.is_fim:
        suffix_cut = cut_suffix(tokenizer, suffix, budget // 4, dummy=dummy)
    prefix_room = budget - overhead - len(suffix_cut.ids)
    prefix_cut = cut_prefix(
        tokenizer, prefix, prefix_room, grid=cut_grid_lines, continuation=False, dummy=dummy
    )

    # 2. Snippets get what an untruncated prefix leaves, in steps of SNIPPET_GRID tokens.
    snippet_ids: list[int] = []
    used = 0
    file_header, prefix_header = _file_headers(tokenizer, fmt, path) if snippets else ([], [])
    if snippets and not prefix_cut.truncated:
        step = max(1, min(SNIPPET_GRID, budget // 8))
        reserved = -(-len(prefix_cut.ids) // step) * step
        room = prefix_room - reserved - len(file_header) - len(prefix_header)
        if fmt.file_sep_id is None and dummy:
            room -= 1  # the prefix is re-encoded without its dummy space: allow for a token
        if room > 0:
            snippet_ids, used = _snippet_segments(tokenizer, fmt, snippets, room, comment)
    if not used:
        file_header, prefix_header = [], []
    elif fmt.file_sep_id is None and dummy and prefix:
        # The prefix now continues the comment block, so it loses its dummy space.
        prefix_cut = Cut(tuple(_encode(tokenizer, prefix, continuation=True, dummy=True)), 0, False)

    # 3. Token healing backs the prefix up over its last token.
    prefix_ids = list(prefix_cut.ids)
    healing: Healing | None = None
    constraint: HealingConstraint | None = None
    if heal and prefix_ids:
        prefix_ids, healing, constraint = _healed(tokenizer, fmt, prefix_ids)

    # 4. Repo-level snippets precede the FIM block; comment-block snippets start the prefix.
    repo_level = fmt.file_sep_id is not None
    front = snippet_ids + file_header if repo_level else []
    lead = prefix_header + ([] if repo_level else snippet_ids)
    ids = _assemble(fmt, used_layout, front, lead, prefix_ids, list(suffix_cut.ids))
    assert len(ids) <= budget, (len(ids), budget)
    return Prompt(
        ids=tuple(ids),
        prefix_tokens=len(prefix_ids),
        suffix_tokens=len(suffix_cut.ids),
        snippet_tokens=len(snippet_ids) + len(file_header) + len(prefix_header),
        prefix_truncated=prefix_cut.truncated,
        suffix_truncated=suffix_cut.truncated,
        layout=used_layout,
        prefix_start=prefix_cut.start,
        suffix_end=suffix_cut.start,
        snippets_used=used,
        healing=healing,
        constraint=constraint,
    )
