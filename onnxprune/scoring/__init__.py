"""Importance criteria: one score per channel slot of a group, registered by name (importance.py);
catalog.py looks them up and scores a whole graph."""
