"""Rendering of explanations as matplotlib figures (pure: no model runs here, no pyplot state, no display calls).

Every ``plot_*`` function takes data first, an optional ``ax``, and returns a ``matplotlib.figure.Figure``;
``render_heatmap`` returns an RGB array. Nothing here imports torch, transformers or ipywidgets.
"""

from .attention import patch_grid_of, plot_attention_grid, plot_patch_attention, plot_word_attention, select_attention
from .comparison import compute_auc, correlate_ranks, plot_method_comparison, plot_perturbation_curves
from .export import explanation_report_html, figure_to_png, html_table, save_png
from .geometry import crop_geometry, crop_region, patch_region, patch_scores_to_pixels
from .heatmap import plot_boxes, plot_patch_relevance, render_heatmap
from .tasks import choice_text, plot_pbc_overlay, plot_vcr_choices, referenced_objects
from .tokens import plot_token_strip, token_spans_html

__all__ = [
    "choice_text", "compute_auc", "correlate_ranks", "crop_geometry", "crop_region", "explanation_report_html",
    "figure_to_png", "html_table", "patch_grid_of", "patch_region", "patch_scores_to_pixels", "plot_attention_grid",
    "plot_boxes", "plot_method_comparison", "plot_patch_attention", "plot_patch_relevance", "plot_pbc_overlay",
    "plot_perturbation_curves", "plot_token_strip", "plot_vcr_choices", "plot_word_attention", "referenced_objects",
    "render_heatmap", "save_png", "select_attention", "token_spans_html",
]
