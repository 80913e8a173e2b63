"""``EmbeddingForward``: any head's target score as a function of the model's input embeddings, the one forward
function Captum's gradient methods attribute through (integrated gradients, GradientShap, saliency, input × gradient),
for VQA, ITM, PBC and VCR alike.

Captum's inputs are a tuple of embeddings, each with a batch dimension first:

- ``tokens`` (batch, [choices,] text_len, Ht): the text tower's token embeddings, of every choice of a VCR item: its
  embedding layer's output, after DeBERTa's embedding LayerNorm (before it, input × gradient would be zero for every
  token: the LayerNorm ignores the scale of its input, so its gradient is orthogonal to it);
- ``patches`` (batch, patches, Hv): the image tower's patch embeddings (before its class token and positions);
- ``boxes`` (batch, choices, boxes, H), VCR items with object boxes only: the box tokens' states before their token
  types (the model builds each from the mean of its box's projected patch states; here they are inputs of their own,
  so a box gets its own score and its patches only what reaches them directly).

Forward hooks put the given embeddings in place of the layers' outputs for the call and are always removed.
``baselines()`` are the inputs with the text's pieces replaced by padding (special tokens kept), the image by its
median colour (``background_fill``) and the boxes by those of that blank image; ``scores(attributions)`` sums
Captum's attributions over channels into the image and text scores of an ``Attribution``.

Example:
    >>> import numpy as np
    >>> from captum.attr import IntegratedGradients
    >>> from vle import VLEConfig, VLEForVQA
    >>> from vle.explain import ExplainInputs, VQAAnswer
    >>> from vle.testing import tiny_processor
    >>> model = VLEForVQA(VLEConfig.tiny(id2label={0: "red", 1: "blue"})).eval()
    >>> inputs = ExplainInputs.build(tiny_processor(), np.zeros((32, 32, 3), np.uint8), "what color ?")
    >>> f = EmbeddingForward(model, inputs, VQAAnswer(0, "red"))
    >>> attributions = IntegratedGradients(f).attribute(f.inputs(), baselines=f.baselines(), n_steps=4)
    >>> [tuple(a.shape) for a in attributions]
    [(1, 6, 32), (1, 16, 24)]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from .inputs import background_fill
from .recorder import base_model


def _reindexed(target, choices: list[int]):
    """The VCR target read from the logits of ``choices`` alone (choice c becomes its position there)."""
    fields = {"choice": choices.index(target.choice)}
    if hasattr(target, "other"):
        fields["other"] = choices.index(target.other)
    return replace(target, **fields)


def text_baseline(input_ids: torch.Tensor, special_ids, pad_id: int) -> torch.Tensor:
    """The ids with every piece replaced by padding, special tokens kept."""
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in special_ids:
        keep |= input_ids == special
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))


@contextmanager
def frozen_parameters(model):
    """Parameters without gradients for the block (restored after): a backward pass then computes only the
    activations' gradients, not the weights'."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class EmbeddingForward:
    """``f(tokens, patches[, boxes]) -> (batch,)`` target scores of one example (``inputs``) for ``target``."""

    def __init__(self, model, inputs, target):
        self.model, self.example, self.target = model, inputs, target
        self.vle = base_model(model)
        self.has_boxes = inputs.is_vcr and any(len(boxes) for boxes in inputs.model_inputs.get("patch_ids", [[]])[0])
        self._values = self._baselines = None
        # A VCR choice's logit reads only its own sequence: only the target's choices are fused, and ``scored`` reads
        # the target from their logits (the other choices' inputs get zero attribution, exactly as in a full run).
        self.choices = list(target.sequences) if inputs.is_vcr else None
        self.scored = _reindexed(target, self.choices) if inputs.is_vcr else target

    # -- Captum's inputs -------------------------------------------------------------------------------------------

    def _embed(self, input_ids, pixel_values) -> tuple:
        """The embeddings of these (batch-1) ids and pixels: (tokens, patches[, boxes])."""
        vle = self.vle
        with torch.no_grad():
            mi = self.example.model_inputs
            flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731  (VCR: choices)
            tokens = vle.text_model.embeddings(input_ids=flat(input_ids), token_type_ids=flat(mi.get("token_type_ids")),
                                               mask=flat(mi.get("attention_mask"))).reshape(*input_ids.shape, -1)
            conv = vle.vision_model.vision_model.embeddings.patch_embedding
            patches = conv(pixel_values.to(conv.weight.dtype)).flatten(2).transpose(1, 2)  # (1, patches, Hv)
            if not self.has_boxes:
                return tokens, patches
            return tokens, patches, self._box_states(pixel_values)

    def _box_states(self, pixel_values) -> torch.Tensor:
        """(1, choices, boxes, H): each choice's box tokens as the model builds them, before their token types."""
        vle, mi = self.vle, self.example.model_inputs
        projected = vle.image_projection_layer(vle.get_image_features(pixel_values))  # (1, 1 + patches, H)
        choices = mi["input_ids"].shape[1]
        per_choice = mi["extend_token_type_ids"][0]
        joined, _, _ = vle._append_box_tokens(projected.expand(choices, -1, -1), list(mi["patch_ids"][0]),
                                              ([pair[0] for pair in per_choice], [pair[1] for pair in per_choice]))
        return joined[None, :, projected.shape[1]:]

    def inputs(self) -> tuple:
        if self._values is None:
            mi = self.example.model_inputs
            self._values = self._embed(mi["input_ids"], mi["pixel_values"])
        return self._values

    def baselines(self) -> tuple:
        if self._baselines is None:
            mi = self.example.model_inputs
            pad_id = self.model.config.text_config.pad_token_id or 0
            self._baselines = self._embed(text_baseline(mi["input_ids"], self.example.special_ids, pad_id),
                                          background_fill(mi["pixel_values"]))
        return self._baselines

    # -- the forward -----------------------------------------------------------------------------------------------

    def _kwargs(self, batch: int) -> dict:
        mi = self.example.model_inputs
        kwargs = {}
        for key, value in mi.items():
            if isinstance(value, torch.Tensor):
                if self.choices is not None and key != "pixel_values":
                    value = value[:, self.choices]
                kwargs[key] = value.expand(batch, *value.shape[1:])  # pixels too: their patch embedding is replaced
            elif key == "patch_ids" or (key == "extend_token_type_ids" and self.example.is_vcr):
                kwargs[key] = [[value[0][c] for c in self.choices]] * batch
            elif key == "extend_token_type_ids":
                kwargs[key] = (value[0] * batch, value[1] * batch)
        kwargs.update(self.target.model_kwargs(self.model))
        if self.model.reads_pooled_only(kwargs.get("task")):
            kwargs["pooled_only"] = True
        return kwargs

    def _hooks(self, tokens, patches, boxes) -> list:
        vle = self.vle
        words = vle.text_model.embeddings
        clip = vle.vision_model.vision_model.embeddings.patch_embedding
        if self.choices is not None:
            tokens = tokens[:, self.choices]
            if boxes is not None:  # as many box rows as the fused choices' most boxes (the model pads to that)
                most = max(len(self.example.model_inputs["patch_ids"][0][c]) for c in self.choices)
                boxes = boxes[:, self.choices, :most]
        handles = [words.register_forward_hook(lambda _m, _a, out: tokens.reshape(out.shape).to(out.dtype)),
                   clip.register_forward_hook(
                       lambda _m, _a, out: patches.transpose(1, 2).reshape(out.shape).to(out.dtype))]
        if boxes is not None:
            handles += self._box_hooks(boxes)
        return handles

    def _box_hooks(self, boxes) -> list:
        """Both streams' first fusion layers read the image sequence (the text layer as its context): its box rows
        become ``boxes`` plus their token types in both."""
        vle, mi = self.vle, self.example.model_inputs
        n_boxes, first = boxes.shape[2], vle.config.patch_grid ** 2 + 1
        pairs = [mi["extend_token_type_ids"][0][c] for c in self.choices]
        per_choice = [list(pair[0]) + [0] * (n_boxes - len(pair[0])) for pair in pairs]
        types = vle.token_type_embeddings(torch.as_tensor(per_choice, device=boxes.device))  # (choices, boxes, H)
        rows = (boxes + types.to(boxes.dtype)).flatten(0, 1)  # (batch * choices, boxes, H); padded rows are masked
        done = {}

        def swap(sequence):
            if id(sequence) not in done:
                done[id(sequence)] = torch.cat([sequence[:, :first], rows.to(sequence.dtype),
                                                sequence[:, first + n_boxes:]], dim=1)
            return done[id(sequence)]

        text_layer, image_layer = vle.cross_modal_text_layers[0], vle.cross_modal_image_layers[0]
        return [text_layer.register_forward_pre_hook(lambda _m, args: (args[0], swap(args[1]), *args[2:])),
                image_layer.register_forward_pre_hook(lambda _m, args: (swap(args[0]), *args[1:]))]

    def logits(self, tokens, patches, boxes=None) -> torch.Tensor:
        """The head's logits; for a VCR item over the target's choices only, in their order (read with
        ``scored``)."""
        handles = self._hooks(tokens, patches, boxes)
        try:
            return self.model(**self._kwargs(len(tokens))).logits
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, tokens, patches, boxes=None) -> torch.Tensor:
        return self.scored.score(self.logits(tokens, patches, boxes))

    # -- scores ----------------------------------------------------------------------------------------------------

    def scores(self, attributions) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Captum's attributions (same layout as ``inputs()``) summed over channels: image (patches + boxes,) with
        the explained choice's boxes, text (text_len,) of the explained choice, and for a VCR item metadata with
        every choice's token scores, ``choice_token_scores`` (choices, text_len)."""
        tokens, patches = (a.detach()[0].float().sum(-1) for a in attributions[:2])  # ([choices,] L), (patches,)
        metadata, sequence = {}, self.target.sequences[0]
        if self.example.is_vcr:
            metadata["choice_token_scores"] = tokens
            tokens = tokens[sequence]
        boxes = attributions[2].detach()[0, sequence, : self.example.n_boxes].float().sum(-1) if self.has_boxes \
            else patches.new_zeros(self.example.n_boxes)
        return torch.cat([patches, boxes]), tokens, metadata
