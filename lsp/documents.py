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

from .core.context import DocumentSnapshot, is_binary_or_huge

MAX_DOCUMENT_CHARS = 4_000_000


@dataclass(frozen=True)
class Snapshot:
    """The core's ``DocumentSnapshot`` plus the cursor in the client's own units."""

    core: DocumentSnapshot
    position: types.Position  # in the negotiated encoding, echoed back in ranges

    @property
    def uri(self) -> str:
        return self.core.uri

    @property
    def version(self) -> int:
        return self.core.version

    @property
    def language_id(self) -> str:
        return self.core.language_id

    @property
    def prefix(self) -> str:
        return self.core.prefix

    @property
    def suffix(self) -> str:
        return self.core.suffix


class NotCompletable(Exception):
    """The document is binary or too large: answer with no suggestion, say why once."""


def take_snapshot(doc: TextDocument, position: types.Position) -> Snapshot:
    """Copy prefix and suffix at ``position``; reject positions outside the document."""
    lines = doc.lines
    if (
        position.line < 0
        or position.line > len(lines)
        or (position.line == len(lines) and position.character != 0)
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
    # The core samples the start of the text; a NUL anywhere would be refused by the daemon.
    if is_binary_or_huge(source, MAX_DOCUMENT_CHARS) or "\x00" in source:
        raise NotCompletable(f"{doc.uri} is binary or over {MAX_DOCUMENT_CHARS} characters")
    offset = doc.offset_at_position(position)
    line_start = source.rfind("\n", 0, offset) + 1
    core = DocumentSnapshot(
        uri=doc.uri,
        version=doc.version or 0,
        language_id=doc.language_id or "",
        text=source,
        line=position.line,
        character=offset - line_start,
        offset=offset,
    )
    return Snapshot(core=core, position=position)


def cursor_after_change(doc: TextDocument, change) -> DocumentSnapshot | None:
    """Where the cursor is after an incremental edit: at the end of the inserted text.

    LSP does not send the cursor with ``didChange``; for typing, the end of the change is it.
    """
    rng = getattr(change, "range", None)
    if rng is None:
        return None
    source = doc.source
    offset = min(len(source), doc.offset_at_position(rng.start) + len(change.text))
    line = source.count("\n", 0, offset)
    line_start = source.rfind("\n", 0, offset) + 1
    return DocumentSnapshot(
        uri=doc.uri,
        version=doc.version or 0,
        language_id=doc.language_id or "",
        text=source,
        line=line,
        character=offset - line_start,
        offset=offset,
    )
