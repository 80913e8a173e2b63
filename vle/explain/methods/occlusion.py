"""Occlusion (Captum ``FeatureAblation``): hide one window of patches (pixels set to the image's median colour,
``background_fill``, as the perturbation curves do) or one word (its pieces dropped from the attention mask) at a
time and record how much the target score falls. Signed: a negative score means the target got stronger without it. A
window's drop is shared evenly by its patches (edge windows may hold fewer) and a word's by its pieces, so word scores
are the drops themselves. Box tokens get no score of their own.
"""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation

from ..inputs import background_fill, merge_words
from ..wrapper import TargetForward
from .base import Attribution, Method, register


def patch_groups(grid: int, patch_size: int, window: int, device=None) -> torch.Tensor:
    """(1, 3, H, W) feature mask: the id of each pixel's window of ``window`` × ``window`` patches."""
    cells = (grid + window - 1) // window
    ids = torch.arange(cells * cells, device=device).reshape(cells, cells)
    ids = ids.repeat_interleave(window, 0).repeat_interleave(window, 1)[:grid, :grid]
    pixels = ids.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    return pixels[None, None].expand(1, 3, *pixels.shape)


def window_share(image_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(grid * grid,) the number of patches in each patch's window (edge windows of a grid that is not a multiple
    of the window hold fewer): a window's value divided by it is each patch's share."""
    cells = image_mask[0, 0, ::patch_size, ::patch_size].reshape(-1)  # (grid * grid,) window ids
    return torch.bincount(cells)[cells].float()


def word_groups(tokens, special_tokens, text_len: int, first_id: int, device=None) -> torch.Tensor:
    """(1, text_len) feature mask: one id per word, starting at ``first_id``; special tokens and padding share one
    extra id whose score is discarded."""
    _, _, word_of_token = merge_words(tokens, [0.0] * len(tokens), special_tokens)
    n_words = max(word_of_token, default=-1) + 1
    ids = [first_id + (w if w >= 0 else n_words) for w in word_of_token]
    ids += [first_id + n_words] * (text_len - len(ids))
    return torch.tensor([ids], device=device), n_words


class PatchWordFeatures:
    """The features occlusion and KernelSHAP perturb: windows of ``window`` × ``window`` patches, then words (one id
    each; special tokens and padding share one more id, ``special``, whose value is discarded). ``scores`` turns
    Captum's per-pixel and per-piece values into (patches + boxes,) and (text_len,) scores, a window's value shared
    by its patches and a word's by its pieces."""

    def __init__(self, model, inputs, window: int):
        self.patch, self.window, self.n_boxes = model.config.patch_size, window, inputs.n_boxes
        pixels = inputs.model_inputs["pixel_values"]
        text_len = inputs.model_inputs["input_ids"].shape[-1]
        self.image_mask = patch_groups(model.config.patch_grid, self.patch, window, pixels.device)
        self.n_cells = int(self.image_mask.max()) + 1
        self.text_mask, self.n_words = word_groups(inputs.tokens, inputs.special_tokens, text_len, self.n_cells,
                                                   pixels.device)
        self.special = self.n_cells + self.n_words
        self.keep = torch.ones(1, text_len, device=pixels.device)  # (1, text_len): every token present

    def scores(self, image_attr, text_attr) -> tuple[torch.Tensor, torch.Tensor]:
        cells = image_attr[0, 0, ::self.patch, ::self.patch]  # (grid, grid): every patch carries its window's value
        image = torch.cat([cells.reshape(-1) / window_share(self.image_mask, self.patch),
                           cells.new_zeros(self.n_boxes)])
        pieces = torch.bincount(self.text_mask[0], minlength=self.special + 1).float()
        text = text_attr[0] / pieces[self.text_mask[0]]
        text[self.text_mask[0] == self.special] = 0.0  # special tokens and padding are never perturbed
        return image, text

    def metadata(self) -> dict:
        return {"patch_window": self.window, "windows": self.n_cells, "words": self.n_words}


@register
class Occlusion(Method):
    name = "occlusion"
    signed = True
    needs_image_tower = True
    options = {"patch_window": 1, "batch_size": 32}

    def attribute(self, model, inputs, target):
        inputs = inputs.for_target(target)
        features = PatchWordFeatures(model, inputs, int(self.settings["patch_window"]))
        pixels = inputs.model_inputs["pixel_values"]
        forward = TargetForward(model, inputs, target)
        with torch.no_grad():
            image_attr, text_attr = FeatureAblation(lambda p, k: forward(pixel_values=p, text_keep=k)).attribute(
                (pixels, features.keep), baselines=(background_fill(pixels), 0.0),
                feature_mask=(features.image_mask, features.text_mask),
                perturbations_per_eval=int(self.settings["batch_size"]))
        image, text = features.scores(image_attr, text_attr)
        return Attribution(image, text, features.metadata())
