"""lspilot: local, private AI code completion for every editor."""

__version__ = "0.1.0"
