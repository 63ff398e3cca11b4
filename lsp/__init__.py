"""The language server: one per editor, started by the editor over stdio."""
