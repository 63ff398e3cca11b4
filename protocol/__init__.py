"""The only code that lspilot.lsp and lspilot.daemon share: messages, codec, service."""
