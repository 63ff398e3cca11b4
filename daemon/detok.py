# SPDX-License-Identifier: Apache-2.0
"""Incremental detokenization: token ids in, finished text out, one token at a time.

Why not ``decode([token])`` per token: byte-level BPE splits an emoji or CJK character across
tokens (each half decodes to U+FFFD), and SentencePiece decoders drop the leading space of the
first piece they see, so ``▁return`` alone decodes to ``return``. Like vLLM, we decode a short
window that starts a few tokens *before* the new ones (``prefix_offset``) and emit only the text
past what that window decoded to before (``read_offset``); a window whose text ends in U+FFFD
is held back until the character completes. The window starts in the prompt, so the first
generated piece already gets its space right.

``strip_prefix`` hides text the editor already has: with token healing, generation starts by
reproducing the text cut from the prompt (``Prompt.removed_text``), which must not be inserted
twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens used as decoding context. vLLM uses 5: enough for any SentencePiece space or
# multi-token character to resolve.
CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turn a stream of generated token ids into text chunks that never split a character.

    One instance per generated sequence. Stop tokens should not be pushed: they are not text.
    """

    def __init__(
        self, tokenizer: Any, prompt_ids: Sequence[int] = (), *, strip_prefix: str = ""
    ) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = [int(i) for i in prompt_ids[-CONTEXT_TOKENS:]]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._strip = strip_prefix
        self.text = ""  # everything emitted so far

    def _decode(self, ids: Sequence[int]) -> str:
        return str(
            self._tokenizer.decode(
                list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    def _new_text(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or (not final and full_text.endswith(_REPLACEMENT)):
            return ""
        if not full_text.startswith(prefix_text):
            # A decoder rewrote the context (rare: cleanup rules); trust the common part.
            common = 0
            while common < min(len(prefix_text), len(full_text)):
                if prefix_text[common] != full_text[common]:
                    break
                common += 1
            new = full_text[common:]
        else:
            new = full_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new

    def _emit(self, new: str) -> str:
        """Remove what is left of ``strip_prefix`` from the start of the output."""
        if self._strip and new:
            n = 0
            while n < min(len(self._strip), len(new)) and self._strip[n] == new[n]:
                n += 1
            if n < min(len(self._strip), len(new)):
                self._strip = ""  # output left the healed text; emit the rest unchanged
            else:
                self._strip = self._strip[n:]
            new = new[n:]
        self.text += new
        return new

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes (often "", never half a char)."""
        self._ids.append(int(token_id))
        return self._emit(self._new_text(final=False))

    def flush(self) -> str:
        """Return any held-back text at the end of the sequence (an unfinished character
        comes out as U+FFFD)."""
        if self._read_offset >= len(self._ids):
            return ""
        return self._emit(self._new_text(final=True))

    @property
    def pending_strip(self) -> str:
        """Healed text not yet reproduced by the output (normally "" after a few tokens)."""
        return self._strip
