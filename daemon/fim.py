# SPDX-License-Identifier: Apache-2.0
"""Fill-in-the-middle formats: which sentinel ids a model family was trained with.

Why ids and not strings: CodeLlama's ``▁<PRE>``/``▁<SUF>``/``▁<MID>`` are ordinary vocabulary
pieces, so the text ``"<PRE>"`` only encodes to the sentinel by accident of the dummy-prefix
space, and text that *looks* like a sentinel inside user code must never become one. Prompts are
therefore assembled from ids (see ``prompt.py``); this module only finds the ids, once per loaded
tokenizer, from its vocabulary.

Layouts each family was trained with (what ``supports_spm`` records):

- StarCoder(Base) / SantaCoder: PSM and SPM (BigCode's Megatron FIM with an SPM rate; SPM is the
  FIM paper's "variant 2": ``<fim_prefix><fim_suffix>suffix<fim_middle>prefix``). StarCoder2 was
  trained with repo-level FIM in PSM; we keep SPM available but default to PSM.
- CodeLlama 7B/13B: PSM and SPM with equal probability (Code Llama paper, sec. 2.3); Meta's
  reference ``infilling_prompt_tokens(suffix_first=True)`` gives
  ``<s>▁<PRE>▁<SUF>suffix▁<MID>prefix``.
- DeepSeek-Coder, Qwen2.5-Coder: PSM only (their papers and model cards show no SPM form).
- CodeGemma: its report mentions both modes but not the SPM token order; unverified, so PSM only.
- InCoder: its own causal-masking format, prefix first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIM_FORMAT_NAMES = (
    "starcoder",
    "santacoder",
    "codellama",
    "deepseek",
    "qwen",
    "codegemma",
    "incoder",
    "none",
)


class FimFormatError(ValueError):
    """The requested FIM format is unknown, or the tokenizer lacks its sentinel tokens."""


@dataclass(frozen=True)
class FimFormat:
    """The sentinel ids of one FIM template, resolved against a concrete tokenizer.

    A PSM prompt is ``[bos] prefix_ids PREFIX suffix_ids SUFFIX middle_ids``; sentinels are tuples
    because InCoder's middle marker is two tokens (``<|mask:1|><|mask:0|>``) and its prefix marker
    is empty. For ``name == "none"`` all three are empty: the prompt is the prefix alone.
    """

    name: str
    prefix_ids: tuple[int, ...] = ()
    suffix_ids: tuple[int, ...] = ()
    middle_ids: tuple[int, ...] = ()
    # Prepended to every prompt. DeepSeek-Coder needs 32013 and CodeLlama 1 even though
    # transformers 5 does not add them for DeepSeek; None where the model was trained without.
    bos_id: int | None = None
    eos_id: int | None = None
    # Generation ends at any of these: EOS, EOT/end-of-mask, fim_pad, file separators, and the
    # sentinels themselves (a model that emits one has left the middle).
    stop_ids: frozenset[int] = frozenset()
    # Repo-level context tokens, where the family was trained with them (Qwen2.5-Coder, StarCoder2).
    file_sep_id: int | None = None
    repo_name_id: int | None = None
    supports_spm: bool = False
    # SentencePiece tokenizers prepend a "▁" to each encoded text. Meta encodes the prefix with
    # that dummy space and the suffix without it; prompt.py needs to know which case it is in.
    dummy_prefix_space: bool = False

    @property
    def is_fim(self) -> bool:
        return self.name != "none"


def _vocab(tokenizer: Any) -> dict[str, int]:
    return dict(tokenizer.get_vocab())


def _ids(vocab: dict[str, int], *tokens: str) -> tuple[int, ...] | None:
    """The ids of ``tokens``, or None if any is missing from the vocabulary."""
    try:
        return tuple(vocab[t] for t in tokens)
    except KeyError:
        return None


def _present(vocab: dict[str, int], *tokens: str) -> frozenset[int]:
    return frozenset(vocab[t] for t in tokens if t in vocab)


def _adds_dummy_prefix(tokenizer: Any) -> bool:
    """True for SentencePiece-style tokenizers that turn "a" into "▁a"."""
    ids = tokenizer.encode("a", add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids[:1])
    return bool(pieces) and isinstance(pieces[0], str) and pieces[0].startswith("▁")


def _auto_bos(tokenizer: Any) -> int | None:
    """The BOS the tokenizer itself would add, for families without a rule of their own."""
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    if len(with_special) > len(without) and with_special[-len(without) :] == without:
        return int(with_special[0])
    return None


def _format(name: str, tokenizer: Any, vocab: dict[str, int]) -> FimFormat | None:
    """Build the format ``name`` from ``vocab``; None when the tokenizer lacks its sentinels."""
    eos = tokenizer.eos_token_id
    base_stops = frozenset({eos}) if eos is not None else frozenset()
    dummy = _adds_dummy_prefix(tokenizer)

    if name == "qwen" or name == "codegemma":
        ids = _ids(vocab, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
        if ids is None:
            return None
        pre, suf, mid = ids
        if name == "qwen":
            file_sep = vocab.get("<|file_sep|>")
            extra = _present(vocab, "<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>")
            stops = base_stops | extra | {pre, suf, mid} | _present(vocab, "<|file_sep|>")
            return FimFormat(
                name, (pre,), (suf,), (mid,), None, vocab.get("<|endoftext|>", eos), stops,
                file_sep_id=file_sep, repo_name_id=vocab.get("<|repo_name|>"),
                dummy_prefix_space=dummy,
            )  # fmt: skip
        extra = _present(vocab, "<eos>", "<|file_separator|>", "<end_of_turn>")
        return FimFormat(
            name, (pre,), (suf,), (mid,), vocab.get("<bos>", tokenizer.bos_token_id), eos,
            base_stops | extra | {pre, suf, mid}, dummy_prefix_space=dummy,
        )  # fmt: skip

    if name == "starcoder" or name == "santacoder":
        sep = "_" if name == "starcoder" else "-"
        ids = _ids(vocab, f"<fim{sep}prefix>", f"<fim{sep}suffix>", f"<fim{sep}middle>")
        if ids is None:
            return None
        pre, suf, mid = ids
        # StarCoder2 has <file_sep>/<repo_name>; StarCoder1 has <filename>/<reponame> metadata
        # tokens, which only ever start a new file, so they are stops but not used for context.
        extra = _present(
            vocab, "<|endoftext|>", f"<fim{sep}pad>", "<file_sep>", "<filename>",
            "<repo_name>", "<reponame>",
        )  # fmt: skip
        return FimFormat(
            name, (pre,), (suf,), (mid,), None, eos, base_stops | extra | {pre, suf, mid},
            file_sep_id=vocab.get("<file_sep>"), repo_name_id=vocab.get("<repo_name>"),
            supports_spm=True, dummy_prefix_space=dummy,
        )  # fmt: skip

    if name == "codellama":
        ids = _ids(vocab, "▁<PRE>", "▁<SUF>", "▁<MID>")
        if ids is None:
            return None
        pre, suf, mid = ids
        bos = vocab.get("<s>", tokenizer.bos_token_id)
        # "▁<EOT>" and its repeats ("▁<EOT><EOT>", ... ids 32010-32015) all end the middle.
        extra = _present(vocab, "</s>") | {i for t, i in vocab.items() if t.startswith("▁<EOT>")}
        return FimFormat(
            name, (pre,), (suf,), (mid,), bos, vocab.get("</s>", eos),
            base_stops | extra | {pre, suf, mid}, supports_spm=True, dummy_prefix_space=dummy,
        )  # fmt: skip

    if name == "deepseek":
        ids = _ids(vocab, "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")
        if ids is None:
            return None
        pre, suf, mid = ids
        bos = vocab.get("<｜begin▁of▁sentence｜>", tokenizer.bos_token_id)
        eos_base = vocab.get("<｜end▁of▁sentence｜>", eos)
        extra = _present(vocab, "<｜end▁of▁sentence｜>", "<|EOT|>")
        return FimFormat(
            name, (pre,), (suf,), (mid,), bos, eos_base, base_stops | extra | {pre, suf, mid},
            dummy_prefix_space=dummy,
        )  # fmt: skip

    if name == "incoder":
        ids = _ids(vocab, "<|mask:0|>", "<|mask:1|>")
        if ids is None:
            return None
        m0, m1 = ids
        # InCoder: left <|mask:0|> right <|mask:1|><|mask:0|> middle <|endofmask|>
        extra = _present(vocab, "<|endofmask|>", "<|endoftext|>")
        return FimFormat(
            name, (), (m0,), (m1, m0), tokenizer.bos_token_id, eos,
            base_stops | extra | {m1}, dummy_prefix_space=dummy,
        )  # fmt: skip

    if name == "none":
        return FimFormat(
            "none", bos_id=_auto_bos(tokenizer), eos_id=eos, stop_ids=base_stops,
            dummy_prefix_space=dummy,
        )  # fmt: skip
    raise FimFormatError(
        f"unknown FIM format {name!r}; choose one of {', '.join(FIM_FORMAT_NAMES)}"
    )


# Detection order matters: CodeGemma shares Qwen's sentinel strings, so it is tried first and
# only matches with Gemma's own tokens present.
_DETECTION_ORDER = (
    "codegemma",
    "qwen",
    "starcoder",
    "santacoder",
    "deepseek",
    "codellama",
    "incoder",
)
_GEMMA_MARKERS = ("<|file_separator|>", "<start_of_turn>")


def detect_fim_format(tokenizer: Any, override: str | None = None) -> FimFormat:
    """Find the FIM format of ``tokenizer`` (a transformers tokenizer) from its vocabulary.

    ``override`` (a name from ``FIM_FORMAT_NAMES``; None or "auto" detects) forces a format, e.g.
    "none" to run a FIM-capable model left to right. Raises ``FimFormatError`` (a ValueError) for
    an unknown name or when the tokenizer lacks the forced format's sentinels. Falls back to
    "none" when no FIM sentinels are found (CodeGen-mono, PolyCoder, CodeParrot).
    """
    vocab = _vocab(tokenizer)
    if override is not None and override != "auto":
        if override not in FIM_FORMAT_NAMES:
            raise FimFormatError(
                f"unknown FIM format {override!r}; choose one of {', '.join(FIM_FORMAT_NAMES)}"
            )
        fmt = _format(override, tokenizer, vocab)
        if fmt is None:
            raise FimFormatError(f"tokenizer has no sentinel tokens for FIM format {override!r}")
        return fmt
    for name in _DETECTION_ORDER:
        if name == "codegemma" and not any(m in vocab for m in _GEMMA_MARKERS):
            continue
        fmt = _format(name, tokenizer, vocab)
        if fmt is not None:
            return fmt
    fmt = _format("none", tokenizer, vocab)
    assert fmt is not None
    return fmt
