"""The corpus search index: `build` (the `londinium index build` stage) and `search` (queries)."""
