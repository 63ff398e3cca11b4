"""lspilot: local, private AI code completion for every editor."""
