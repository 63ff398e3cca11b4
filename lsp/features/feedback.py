# SPDX-License-Identifier: Apache-2.0
"""``lspilot/didShowCompletion`` and ``lspilot/didPartiallyAcceptCompletion`` from plugins.

Editors tell us what they showed and how much the user accepted (in UTF-16 units, as Copilot's
protocol does). Nothing leaves the machine: the counts stay in memory and appear in the
``lspilot.status`` command, the base for opt-in telemetry and confidence tuning later.
"""

from __future__ import annotations

from collections import Counter

SHOWN = "lspilot/didShowCompletion"
PARTIALLY_ACCEPTED = "lspilot/didPartiallyAcceptCompletion"


def register(server) -> None:
    server.feedback = Counter()

    @server.feature(SHOWN)
    def did_show(ls, params) -> None:
        ls.feedback["shown"] += 1

    @server.feature(PARTIALLY_ACCEPTED)
    def did_partially_accept(ls, params) -> None:
        ls.feedback["partially_accepted"] += 1
        length = getattr(params, "acceptedLength", None)
        if isinstance(length, int) and length > 0:
            ls.feedback["accepted_utf16_units"] += length
