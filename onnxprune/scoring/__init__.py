"""Importance criteria: one score per channel slot of a group. Registered by name."""

from __future__ import annotations

from onnxprune.scoring.importance import Importance, get_importance, register_importance

__all__ = ["Importance", "get_importance", "register_importance"]
