"""Rendering of explanations as matplotlib figures (pure: no model runs here)."""
