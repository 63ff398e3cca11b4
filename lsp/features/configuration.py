# SPDX-License-Identifier: Apache-2.0
"""``initialize`` options and ``workspace/didChangeConfiguration``: the server's settings."""

from __future__ import annotations

from lsprotocol import types

from .. import config


def register(server) -> None:
    def warn(message: str) -> None:
        server.log_to_editor(message, types.MessageType.Warning)

    @server.feature(types.INITIALIZE)
    def initialize(ls, params: types.InitializeParams) -> None:
        ls.settings = config.merge(ls.settings, params.initialization_options, warn)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls, params: types.DidChangeConfigurationParams) -> None:
        ls.settings = config.merge(ls.settings, params.settings, warn)
