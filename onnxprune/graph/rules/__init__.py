"""Per-op channel rules, one small module per op family."""
