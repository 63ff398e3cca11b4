# SPDX-License-Identifier: Apache-2.0
"""Loading a model directory's tokenizer so that it tokenizes like the model was trained.

Why not plain ``AutoTokenizer``: transformers 5 rebuilds SentencePiece-derived tokenizers
(``LlamaTokenizer``, ``CodeLlamaTokenizer``) from the config as Metaspace(prepend_scheme=first)
instead of using the shipped ``tokenizer.json``, and the rebuilt pipeline loses leading spaces:
CodeLlama's ``"  x"`` becomes ``▁ ▁x`` (one space) instead of ``▁▁ ▁x``. Indentation is most of
what a code model sees, so when the shipped ``tokenizer.json`` disagrees with what
``AutoTokenizer`` built on a probe of code whitespace, we load the file as it is.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

log = logging.getLogger(__name__)

# Leading, doubled and trailing spaces, tabs and a newline: where the pipelines differ.
PROBE = "  x  = 1\n    if y:\n\treturn  z "


def load_tokenizer(model_dir: str | pathlib.Path) -> Any:
    """The tokenizer of ``model_dir``: ``AutoTokenizer``, or the raw ``tokenizer.json`` wrapped in
    ``PreTrainedTokenizerFast`` when transformers' rebuilt pipeline tokenizes ``PROBE``
    differently (CodeLlama under transformers 5)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    file = pathlib.Path(model_dir) / "tokenizer.json"
    if not file.is_file():
        return tok
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(file))
    if raw.encode(PROBE, add_special_tokens=False).ids == tok.encode(
        PROBE, add_special_tokens=False
    ):
        return tok
    log.info("%s: AutoTokenizer differs from tokenizer.json; using tokenizer.json", model_dir)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(file),
        bos_token=tok.bos_token,
        eos_token=tok.eos_token,
        unk_token=tok.unk_token,
        pad_token=tok.pad_token,
        model_max_length=tok.model_max_length,
    )
