# SPDX-License-Identifier: Apache-2.0
"""Settings of the language server, from initializationOptions and didChangeConfiguration.

Keys are camelCase as editors write them (``debounceMs``). A bad value produces one warning and
keeps the default, so a typo in an editor config never stops completion.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import attrs

log = logging.getLogger(__name__)


@attrs.frozen
class Settings:
    daemon_address: str = ""  # empty: LSPILOT_DAEMON_ADDRESS, else the per-user default socket
    autostart_daemon: bool = True
    model: str = ""  # model for an autostarted daemon; empty: the registry default
    # 75 ms, as Copilot: below the ~120-200 ms between keystrokes of a fluent typist, so a pause
    # is noticed almost at once, while bursts of typing still coalesce. Stale requests are
    # cancelled in the daemon, so a short debounce costs little.
    debounce_ms: int = 75
    adaptive_debounce: bool = True
    max_new_tokens: int = 128
    max_prefix_chars: int = 16_000
    max_suffix_chars: int = 4_000
    stop: str = "auto"  # auto | single_line | multi_line
    choices_on_invoke: int = 3
    request_timeout_ms: int = 30_000
    partial_updates: bool = True  # send lspilot/partialCompletion while generating
    temperature: float = 0.0
    # Snippets of other open documents and recent edits. Off: bench/quality.py measured no gain
    # (single-line exact 25% with, 30% without; within noise) for ~400 more prompt tokens.
    extra_context: bool = False
    # On: bench/quality.py measured single-line exact match 25% -> 52.5% (docs/quality.md).
    token_healing: bool = True
    postprocess: bool = True
    cache: bool = True
    type_through: bool = True  # keep serving a shown or streaming suggestion the user types along


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def merge(current: Settings, options: Any, warn=log.warning) -> Settings:
    """Overlay ``options`` (a dict, maybe nested under "lspilot") on ``current``."""
    if not isinstance(options, dict):
        return current
    if isinstance(options.get("lspilot"), dict):
        options = options["lspilot"]
    fields = {f.name: f for f in attrs.fields(Settings)}
    changes = {}
    for key, value in options.items():
        name = _snake(key)
        field = fields.get(name)
        if field is None:
            continue  # unknown keys are tolerated: other tools share the settings object
        expected = field.type if isinstance(field.type, type) else eval(str(field.type))  # noqa: S307
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            warn(
                f"lspilot: setting {_camel(name)}={value!r} is not a {expected.__name__}; "
                f"using {getattr(current, name)!r}"
            )
            continue
        if name == "stop" and value not in ("auto", "single_line", "multi_line"):
            warn(f"lspilot: setting stop={value!r} must be auto, single_line or multi_line")
            continue
        changes[name] = value
    return attrs.evolve(current, **changes)
