"""Command-line tools that act as clients of the language server and daemon."""
