# SPDX-License-Identifier: Apache-2.0
"""Range checks beyond types: the daemon enforces them, clients may check early."""

from __future__ import annotations

from .codec import ProtocolError
from .messages import MAX_CHOICES, MAX_NEW_TOKENS, MAX_SNIPPETS, MAX_TEXT_CHARS, CompleteRequest


def check_complete_request(req: CompleteRequest) -> CompleteRequest:
    name = "CompleteRequest"
    if not req.request_id:
        raise ProtocolError(f"{name}.request_id: must not be empty")
    if len(req.prefix) + len(req.suffix) > MAX_TEXT_CHARS:
        raise ProtocolError(f"{name}.prefix: prefix and suffix exceed {MAX_TEXT_CHARS} characters")
    if len(req.snippets) > MAX_SNIPPETS:
        raise ProtocolError(f"{name}.snippets: more than {MAX_SNIPPETS} snippets")
    for i, s in enumerate(req.snippets):
        if len(s.text) > MAX_TEXT_CHARS:
            raise ProtocolError(f"{name}.snippets[{i}].text: longer than {MAX_TEXT_CHARS}")
    if not 1 <= req.max_new_tokens <= MAX_NEW_TOKENS:
        raise ProtocolError(f"{name}.max_new_tokens: must be in 1..{MAX_NEW_TOKENS}")
    if not 1 <= req.n <= MAX_CHOICES:
        raise ProtocolError(f"{name}.n: must be in 1..{MAX_CHOICES}")
    if not 0.0 <= req.temperature <= 2.0:
        raise ProtocolError(f"{name}.temperature: must be in 0..2")
    if not 0.0 < req.top_p <= 1.0:
        raise ProtocolError(f"{name}.top_p: must be in (0, 1]")
    if req.deadline_ms < 0:
        raise ProtocolError(f"{name}.deadline_ms: must not be negative")
    if not 0 <= req.logprobs <= 20:
        raise ProtocolError(f"{name}.logprobs: must be in 0..20")
    if "\x00" in req.prefix or "\x00" in req.suffix:
        raise ProtocolError(f"{name}.prefix: binary text (NUL bytes) is not completed")
    return req
