"""Helpers shared by tests in different folders (importable because pytest's `pythonpath` has tests/)."""
