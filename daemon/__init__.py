"""The daemon: one per machine, owns tokenizer, FIM template, model and engine."""
