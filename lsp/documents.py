# SPDX-License-Identifier: Apache-2.0
"""Immutable snapshots of a document at the cursor, taken before any await.

pygls keeps the documents (incremental sync, negotiated position encoding); a completion copies
what it needs into a ``Snapshot`` first, so edits that arrive while the model runs can never
change the request under it, and a result for an older version can be recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.workspace import TextDocument

MAX_DOCUMENT_CHARS = 4_000_000


@dataclass(frozen=True)
class Snapshot:
    uri: str
    version: int | None
    language_id: str
    prefix: str
    suffix: str
    position: types.Position  # in the client's units, echoed back in ranges


class NotCompletable(Exception):
    """The document is binary or too large: answer with no suggestion, say why once."""


def take_snapshot(doc: TextDocument, position: types.Position) -> Snapshot:
    """Copy prefix and suffix at ``position``; reject positions outside the document."""
    lines = doc.lines
    if position.line < 0 or position.line > len(lines) or (
        position.line == len(lines) and position.character != 0
    ):
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is outside {doc.uri} "
            f"({len(lines)} lines)"
        )
    line_text = lines[position.line] if position.line < len(lines) else ""
    line_text = line_text.rstrip("\r\n")
    units = doc.position_codec.client_num_units(line_text)
    if position.character < 0 or position.character > units:
        raise JsonRpcInvalidParams(
            f"character {position.character} is beyond the end of line {position.line} "
            f"({units} units in {doc.position_codec.encoding})"
        )
    source = doc.source
    if len(source) > MAX_DOCUMENT_CHARS:
        raise NotCompletable(f"{doc.uri} is larger than {MAX_DOCUMENT_CHARS} characters")
    if "\x00" in source:
        raise NotCompletable(f"{doc.uri} looks binary (NUL bytes)")
    offset = doc.offset_at_position(position)
    return Snapshot(
        uri=doc.uri,
        version=doc.version,
        language_id=doc.language_id or "",
        prefix=source[:offset],
        suffix=source[offset:],
        position=position,
    )
