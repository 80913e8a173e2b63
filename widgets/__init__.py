"""Thin ipywidgets explorers over vle and viz."""
