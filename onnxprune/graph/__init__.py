"""The channel dependency engine: tracks, rules, analysis, groups."""
