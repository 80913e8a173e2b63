"""VLE: CLIP-ViT image tower + DeBERTa-v3 text tower joined by METER-style co-attention fusion layers.

Read top to bottom: fusion building blocks, the base model, the checkpoint loader, then one class per head.
Parameter names follow the original checkpoints (transformers 4.2x layout), so the public ``hfl/vle-*`` weights
load as they are and ``save_pretrained`` writes the same layout back.

Example:
    >>> import torch
    >>> from vle import VLEConfig, VLEModel
    >>> model = VLEModel(VLEConfig.tiny()).eval()
    >>> out = model(input_ids=torch.tensor([[1, 5, 6, 2]]), pixel_values=torch.zeros(1, 3, 32, 32))
    >>> tuple(out.pooler_output.shape), tuple(out.image_embeds.shape)
    ((1, 64), (1, 17, 32))
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionModel, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging

from .configuration_vle import VLEConfig
from .hub import resolve_model_path
from .loading import (
    align_config_with_checkpoint,
    check_loading_info,
    interpolate_position_embedding,
    readable_loading_errors,
)
from .precision import resolve_dtype

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class VLEModelOutput(ModelOutput):
    """``pooler_output`` (batch, 2H) is [pooled text CLS, pooled image CLS]; ``text_embeds`` (batch, text_len, H) and
    ``image_embeds`` (batch, 1 + patches + boxes, H) are the final fusion states (None when the forward ran with
    ``pooled_only``). The attention tuples are filled only when ``output_attentions=True``; each entry is (batch,
    attention heads, query_len, key_len)."""

    pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_mask: torch.LongTensor | None = None
    image_mask: torch.LongTensor | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_text_self_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_text_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_image_self_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VLEHeadOutput(ModelOutput):
    """``logits`` of a task head, its ``loss`` when labels were given, and the base model's output."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    vle_output: VLEModelOutput | None = None


# ----------------------------------------------------------------------------------------------------------------
# Fusion building blocks (BERT sub-block names, as in the checkpoints)


def _attention_scores(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float,
                      in_place: bool = False) -> torch.Tensor:
    """scale · query @ keyᵀ + mask. The queries are scaled, not the (query_len, key_len) scores, and the mask is added
    only where it masks something: at 1297 image tokens those two full-size passes cost more than the product."""
    scores = (query * scale) @ key.transpose(-1, -2)
    if mask is not None and bool(mask.ne(0).any()):
        scores = scores.add_(mask) if in_place else scores + mask
    return scores


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                            scale: float) -> torch.Tensor:
    """softmax(scale · query @ keyᵀ + mask) for (batch, heads, len, head_dim) queries and keys."""
    return _attention_scores(query, key, mask, scale).softmax(dim=-1, dtype=torch.float32).to(query.dtype)


def eager_attention(module, query, key, value, mask, scale: float, dropout: float):
    """The attention map materialised: (output (batch, heads, query_len, head_dim), probabilities)."""
    probs = attention_probabilities(query, key, mask, scale)
    return F.dropout(probs, dropout, module.training) @ value, probs


def sdpa_attention(module, query, key, value, mask, scale: float, dropout: float):
    """PyTorch's fused kernel: the map is never materialised, so no probabilities come back."""
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout), None


# The fusion's attention implementations by name, chosen by ``config._attn_implementation`` as transformers' own
# models choose theirs; code outside the model may register another (same signature) and select it for a while.
FUSION_ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention}


@contextlib.contextmanager
def attention_implementation(config, name: str | None):
    """Select the attention implementation of ``config`` (not of its sub-configs) for the duration of the block;
    ``None`` leaves it as it is."""
    previous = config._attn_implementation
    if name is not None:
        config._attn_implementation = {"": name}
    try:
        yield
    finally:
        config._attn_implementation = {"": previous}


class AttentionProbs(nn.Identity):
    """A named point the attention probabilities pass through when the implementation materialises them, so forward
    hooks can read them without editing model code."""


class VLESelfAttention(nn.Module):
    def __init__(self, config: VLEConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.probs = AttentionProbs()

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor):
        """``context_mask`` is additive, (batch, 1, 1, key_len). Returns (batch, query_len, H) and the probabilities
        (batch, heads, query_len, key_len) when the selected implementation materialises them, else None."""
        query, key, value = self._split(self.query(hidden)), self._split(self.key(context)), self._split(self.value(context))
        attend = FUSION_ATTENTION_FUNCTIONS.get(self.config._attn_implementation, sdpa_attention)
        dropout = self.dropout_p if self.training else 0.0
        out, probs = attend(self, query, key, value, context_mask, self.head_dim ** -0.5, dropout)
        if probs is not None:
            probs = self.probs(probs)
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, -1), probs


class VLEResidualOutput(nn.Module):
    """Post-LN residual: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, config: VLEConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class VLEAttention(nn.Module):
    def __init__(self, config: VLEConfig):
        super().__init__()
        self.self = VLESelfAttention(config)
        self.output = VLEResidualOutput(config, config.hidden_size)

    def forward(self, hidden, context, context_mask):
        attended, probs = self.self(hidden, context, context_mask)
        return self.output(attended, hidden), probs


class VLEIntermediate(nn.Module):
    def __init__(self, config: VLEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class VLEFusionLayer(nn.Module):
    """One co-attention layer of one stream: self-attention, cross-attention to the other stream, FFN."""

    def __init__(self, config: VLEConfig):
        super().__init__()
        self.attention = VLEAttention(config)
        self.crossattention = VLEAttention(config)
        self.intermediate = VLEIntermediate(config)
        self.output = VLEResidualOutput(config, config.intermediate_size)

    def forward(self, hidden, other, self_mask, other_mask, first_only: bool = False):
        """``first_only`` updates only the first (class) token, which still attends to every token of both streams:
        its output equals the first row of the full layer's at a fraction of the cost."""
        query = hidden[:, :1] if first_only else hidden
        query, self_probs = self.attention(query, hidden, self_mask)
        query, cross_probs = self.crossattention(query, other, other_mask)
        return self.output(self.intermediate(query), query), self_probs, cross_probs


class VLEPooler(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class CLIPVisionTower(nn.Module):
    """Keeps CLIP's parameters under ``vision_model.vision_model.*`` as in the checkpoints (transformers 5 dropped the
    inner ``vision_model`` level of CLIPVisionModel)."""

    def __init__(self, vision_config):
        super().__init__()
        self.vision_model = CLIPVisionModel(vision_config)

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False):
        clip = self.vision_model
        size = clip.config.image_size
        other_size = pixel_values.shape[-2:] != (size, size)
        return clip(pixel_values=pixel_values, interpolate_pos_encoding=other_size, output_attentions=output_attentions)


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, len) 0/1 mask → (batch, 1, 1, len) additive mask: 0 to attend, the dtype's minimum to ignore."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _sequential_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """Linear → LayerNorm (PyTorch eps 1e-5) → GELU → Linear: the shape of the VQA, PBC, MPC and VCR heads."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_features))


# ----------------------------------------------------------------------------------------------------------------
# Base model


class VLEPreTrainedModel(PreTrainedModel):
    config_class = VLEConfig
    config: VLEConfig
    base_model_prefix = "vle"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    # old persistent buffers, and (added by register_head) the other task heads a multi-head checkpoint holds
    _keys_to_ignore_on_load_unexpected = [r"position_ids$"]
    _supports_sdpa = True
    # Declared by each head class (see register_head): its task name, the parameter prefixes of the head (or heads)
    # it adds on top of VLEModel, and the explanation target families it answers for ("vqa", "itm", "pbc", "vcr").
    task: str = ""
    head_prefixes: tuple[str, ...] = ()
    explains: tuple[str, ...] = ()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (CLIPVisionModel,)) or module.__class__.__module__.startswith("transformers.models"):
            return  # the towers initialise themselves
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, init_new_head: bool = False,
                        image_size: int | None = None, dtype="float32", dtype_device="cpu", **kwargs):
        """Load a VLE checkpoint: a local folder, a hub id, or a shipped model name (see ``vle.hub``).

        Checkpoints in the original layout (``vle.``-prefixed or bare, old ``position_ids`` buffers, legacy MLM head)
        load with no missing weight. A head the checkpoint lacks is an error naming it, unless
        ``init_new_head=True`` (fine-tuning a new head). ``image_size`` interpolates the position embeddings.
        ``dtype``: the weights' type, loaded as such (no float32 copy on the way): float32 by default, or "auto"
        (``vle.precision.resolve_dtype``: bfloat16 for a wide model where ``dtype_device`` multiplies it natively).
        """

        path = resolve_model_path(pretrained_model_name_or_path)
        output_loading_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        config = kwargs.pop("config", None)
        with readable_loading_errors(path):
            if config is None:
                config = VLEConfig.from_pretrained(path, **hub_kwargs)
            torch_dtype = resolve_dtype(dtype, config, dtype_device)
            align_config_with_checkpoint(config, path, hub_kwargs)
            model, info = super().from_pretrained(path, *model_args, config=config, output_loading_info=True,
                                                  dtype=torch_dtype, **kwargs)
        known = {prefix for head in HEADS.values() for prefix in head.head_prefixes}
        check_loading_info(model, info, path, init_new_head, known)
        if image_size is not None:
            model.base_vle.resize_image(image_size)
        return (model, info) if output_loading_info else model

    @property
    def base_vle(self) -> "VLEModel":
        return getattr(self, self.base_model_prefix, self)


class VLEModel(VLEPreTrainedModel):
    """The encoder: both towers, projections, token types, fusion stacks and poolers. Returns ``VLEModelOutput``."""

    def __init__(self, config: VLEConfig):
        super().__init__(config)
        text_config, vision_config = config.text_config, config.vision_config
        self.vision_model = CLIPVisionTower(vision_config)
        self.text_model = AutoModel.from_config(text_config)
        self.text_projection_layer = nn.Linear(text_config.hidden_size, config.hidden_size)
        self.image_projection_layer = nn.Linear(vision_config.hidden_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.num_token_types, config.hidden_size)
        self.cross_modal_text_layers = nn.ModuleList(VLEFusionLayer(config) for _ in range(config.num_hidden_layers))
        self.cross_modal_image_layers = nn.ModuleList(VLEFusionLayer(config) for _ in range(config.num_hidden_layers))
        self.cross_modal_text_pooler = VLEPooler(config.hidden_size)
        self.cross_modal_image_pooler = VLEPooler(config.hidden_size)
        self.post_init()

    # -- towers ----------------------------------------------------------------------------------------------------

    def get_image_features(self, pixel_values: torch.Tensor, output_attentions: bool = False):
        """CLIP's last hidden state with its post-LayerNorm applied to every token: (batch, 1 + patches, Hv)."""
        clip_config = self.vision_model.vision_model.config
        with attention_implementation(clip_config, "eager" if output_attentions else None):  # CLIP maps need eager
            out = self.vision_model(pixel_values, output_attentions=output_attentions)
        features = self.vision_model.vision_model.post_layernorm(out.last_hidden_state)
        return (features, out.attentions) if output_attentions else features

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                          output_attentions: bool = False):
        """DeBERTa's last hidden state, (batch, text_len, Ht), without projection."""
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, output_attentions=output_attentions)
        return (out.last_hidden_state, out.attentions) if output_attentions else out.last_hidden_state

    def resize_image(self, image_size: int) -> None:
        """Run at another image size from now on: bicubic-interpolate the position embeddings (spec §7)."""
        clip_config = self.config.vision_config
        grid = image_size // clip_config.patch_size
        embeddings = self.vision_model.vision_model.embeddings
        weight = interpolate_position_embedding(embeddings.position_embedding.weight.data, grid)
        embeddings.position_embedding = nn.Embedding.from_pretrained(weight, freeze=False)
        embeddings.num_patches, embeddings.num_positions = grid * grid, grid * grid + 1
        embeddings.image_size = image_size
        embeddings.register_buffer("position_ids", torch.arange(grid * grid + 1)[None], persistent=False)
        clip_config.image_size = image_size

    # -- object (box) tokens -----------------------------------------------------------------------------------

    @staticmethod
    def _append_box_tokens(image_embeds, patch_ids, extend_token_type_ids):
        """Append one token per box (mean of its projected patch states) and build the image mask and token types.

        ``patch_ids`` is [batch][box][patch index]; ``extend_token_type_ids`` is (image-added types per item, text
        types per item). Returns image_embeds (batch, 1 + patches + max boxes, H), image_mask, image token types.
        """
        batch, length, _ = image_embeds.shape
        if extend_token_type_ids is None:
            raise ValueError("patch_ids needs extend_token_type_ids: the token types of the box tokens and of the "
                             "text tokens that mention them")
        image_types_per_item = extend_token_type_ids[0]
        if len(patch_ids) != batch or len(image_types_per_item) != batch:
            raise ValueError(f"patch_ids and extend_token_type_ids[0] need one entry per batch item ({batch}), got "
                             f"{len(patch_ids)} and {len(image_types_per_item)}")
        max_boxes = max((len(boxes) for boxes in patch_ids), default=0)
        boxes_out = image_embeds.new_zeros(batch, max_boxes, image_embeds.shape[-1])
        mask = torch.zeros(batch, length + max_boxes, dtype=torch.long, device=image_embeds.device)
        types = torch.zeros(batch, length + max_boxes, dtype=torch.long, device=image_embeds.device)
        mask[:, :length], types[:, :length] = 1, 1
        for item, boxes in enumerate(patch_ids):
            if len(image_types_per_item[item]) != len(boxes):
                raise ValueError(f"item {item}: {len(boxes)} boxes but {len(image_types_per_item[item])} box token types")
            for box, patches in enumerate(boxes):
                index = torch.as_tensor(list(patches), dtype=torch.long, device=image_embeds.device)
                if index.numel() == 0:
                    raise ValueError(f"item {item}, box {box}: the box covers no patch")
                if int(index.min()) < 0 or int(index.max()) >= length - 1:
                    raise ValueError(f"item {item}, box {box}: patch ids must lie in [0, {length - 1}), got "
                                     f"{int(index.min())}..{int(index.max())}")
                boxes_out[item, box] = image_embeds[item, index + 1].mean(dim=0)  # +1 skips the class token
            mask[item, length:length + len(boxes)] = 1
            types[item, length:length + len(boxes)] = torch.as_tensor(list(image_types_per_item[item]), dtype=torch.long)
        return torch.cat([image_embeds, boxes_out], dim=1), mask, types

    @staticmethod
    def _text_token_types(text_types_per_item, batch: int, length: int, device) -> torch.Tensor:
        types = torch.zeros(batch, length, dtype=torch.long, device=device)
        if len(text_types_per_item) != batch:
            raise ValueError(f"extend_token_type_ids[1] needs one entry per batch item ({batch}), got "
                             f"{len(text_types_per_item)}")
        for item, item_types in enumerate(text_types_per_item):
            item_types = list(item_types)[:length]
            types[item, :len(item_types)] = torch.as_tensor(item_types, dtype=torch.long)
        return types

    # -- forward ---------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        patch_ids: Sequence[Sequence[Sequence[int]]] | None = None,
        extend_token_type_ids=None,
        position_ids: torch.LongTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        output_attentions: bool = False,
        return_dict: bool | None = None,
        pooled_only: bool = False,
        **kwargs,
    ) -> VLEModelOutput:
        """``image_features`` (batch, 1 + patches, Hv), from ``get_image_features``, skips the image tower: asking a
        new question about the same image reuses it. ``pooled_only`` computes only what ``pooler_output`` needs:
        the last fusion layer updates just the two class tokens (same pooled pair, about a third less fusion work;
        for heads that read only the pooled pair, as in training), and ``text_embeds`` / ``image_embeds`` are None."""
        if pooled_only and output_attentions:
            raise ValueError("pooled_only skips the last fusion layer's token states; it cannot return their "
                             "attentions (output_attentions=True)")
        if input_ids is None:
            raise ValueError("input_ids are required: VLE always reads an image together with a text")
        if pixel_values is None and image_features is None:
            raise ValueError("pixel_values (or precomputed image_features) are required")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        vision_attentions = None
        if image_features is None:
            image_features = self.get_image_features(pixel_values, output_attentions=output_attentions)
            if output_attentions:
                image_features, vision_attentions = image_features
        text_out = self.get_text_features(input_ids, attention_mask, token_type_ids, position_ids, output_attentions)
        text_features, text_attentions = text_out if output_attentions else (text_out, None)

        text_embeds = self.text_projection_layer(text_features)  # (batch, text_len, H)
        image_embeds = self.image_projection_layer(image_features)  # (batch, 1 + patches, H)
        if len(image_embeds) != len(text_embeds):
            if len(text_embeds) % len(image_embeds):
                raise ValueError(f"{len(text_embeds)} texts cannot share {len(image_embeds)} images")
            image_embeds = image_embeds.repeat_interleave(len(text_embeds) // len(image_embeds), dim=0)
        batch, text_len, _ = text_embeds.shape

        if patch_ids is not None:
            image_embeds, image_mask, image_types = self._append_box_tokens(image_embeds, patch_ids,
                                                                            extend_token_type_ids)
            text_types = self._text_token_types(extend_token_type_ids[1], batch, text_len, text_embeds.device)
        else:
            if extend_token_type_ids is not None:
                raise ValueError("extend_token_type_ids was given without patch_ids: the box tokens it types are missing")
            image_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
            image_types = torch.ones_like(image_mask)
            text_types = torch.zeros_like(attention_mask)
        for types in (text_types, image_types):
            if types.numel() and int(types.max()) >= self.config.num_token_types:
                raise ValueError(f"token type {int(types.max())} is out of range: this model has "
                                 f"{self.config.num_token_types} token types (num_token_types); too many objects?")
        text_embeds = text_embeds + self.token_type_embeddings(text_types)
        image_embeds = image_embeds + self.token_type_embeddings(image_types)

        text_additive = _additive_mask(attention_mask, text_embeds.dtype)
        image_additive = _additive_mask(image_mask, image_embeds.dtype)
        attentions = {name: [] for name in ("ts", "tc", "is", "ic")}
        x, y = text_embeds, image_embeds
        last = len(self.cross_modal_text_layers) - 1
        fused = FUSION_ATTENTION_FUNCTIONS.get(self.config._attn_implementation, sdpa_attention) is sdpa_attention
        with attention_implementation(self.config, "eager" if output_attentions and fused else None):
            for depth, (text_layer, image_layer) in enumerate(zip(self.cross_modal_text_layers,
                                                                  self.cross_modal_image_layers)):
                # Both streams read the other's previous-layer states: the updates are simultaneous.
                first_only = pooled_only and depth == last
                x_next, text_self, text_cross = text_layer(x, y, text_additive, image_additive, first_only)
                y_next, image_self, image_cross = image_layer(y, x, image_additive, text_additive, first_only)
                x, y = x_next, y_next
                for name, probs in zip(("ts", "tc", "is", "ic"), (text_self, text_cross, image_self, image_cross)):
                    attentions[name].append(probs)

        pooled = torch.cat([self.cross_modal_text_pooler(x), self.cross_modal_image_pooler(y)], dim=-1)
        if pooled_only:
            return VLEModelOutput(pooler_output=pooled, text_mask=attention_mask, image_mask=image_mask)
        if not output_attentions:
            return VLEModelOutput(pooler_output=pooled, text_embeds=x, image_embeds=y, text_mask=attention_mask,
                                  image_mask=image_mask)
        return VLEModelOutput(
            pooler_output=pooled, text_embeds=x, image_embeds=y, text_mask=attention_mask, image_mask=image_mask,
            vision_attentions=tuple(vision_attentions), text_attentions=tuple(text_attentions),
            fusion_text_self_attentions=tuple(attentions["ts"]), fusion_text_cross_attentions=tuple(attentions["tc"]),
            fusion_image_self_attentions=tuple(attentions["is"]), fusion_image_cross_attentions=tuple(attentions["ic"]),
        )


# ----------------------------------------------------------------------------------------------------------------
# Heads


HEADS: dict[str, type] = {}  # task name → head class, filled by register_head


def register_head(cls):
    """Declare a head class: its ``task`` name (the one spelling the pipelines, the command line, the explanation
    targets and training use), its ``head_prefixes`` (how the loader finds it in a checkpoint, and ignores it when
    another head is loaded) and the target families it ``explains``. The one registration a new head needs."""
    if not cls.task or not cls.head_prefixes:
        raise ValueError(f"{cls.__name__} needs a task name and head_prefixes to be registered")
    HEADS[cls.task] = cls
    ignored = VLEPreTrainedModel._keys_to_ignore_on_load_unexpected
    for prefix in cls.head_prefixes:
        pattern = rf"^{re.escape(prefix)}\."
        if pattern not in ignored:
            ignored.append(pattern)
    return cls


_BASE_INPUTS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "patch_ids", "extend_token_type_ids",
                "position_ids", "image_features", "output_attentions", "pooled_only")


class VLEHeadModel(VLEPreTrainedModel):
    """The base of every task head: the encoder under ``vle`` (the checkpoints' layout) and ``_encode(kwargs)``, which
    runs it on the base inputs. A new head subclasses it, builds its layers under its ``head_prefixes``, sets
    ``task`` and ``explains``, and is declared with ``register_head``."""

    def __init__(self, config: VLEConfig):
        super().__init__(config)
        self.vle = VLEModel(config)

    def _encode(self, kwargs) -> VLEModelOutput:
        """The encoder's output for the base inputs in ``kwargs`` (an unknown input is an error, not ignored)."""
        unknown = set(kwargs) - set(_BASE_INPUTS) - {"return_dict"}
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected inputs: {sorted(unknown)}")
        kwargs.pop("return_dict", None)
        return self.vle(**kwargs)

    def reads_pooled_only(self, task: str | None = None) -> bool:
        """Whether the head (of ``task``, for the pretraining model) reads only the pooled pair, so a caller that
        needs nothing but its logits or loss can pass ``pooled_only=True``. VQA and VCR heads do."""
        return True

    def head_kwargs(self, family: str) -> dict:
        """The forward arguments that select the head answering for ``family`` (a multi-head model takes ``task``)."""
        return {}


@register_head
class VLEForVQA(VLEHeadModel):
    """Answer classifier over the pooled pair; ``config.id2label`` names the answers.

    Loss (with ``vqa_labels`` [batch][k] answer ids and ``vqa_scores`` [batch][k] soft scores): mean binary
    cross-entropy over all answers, times the number of answers, as in the original training.
    """

    task, head_prefixes, explains = "vqa", ("vqa_classifier",), ("vqa",)

    def __init__(self, config: VLEConfig):
        super().__init__(config)
        hidden = 2 * config.hidden_size
        self.vqa_classifier = _sequential_head(hidden, hidden, config.num_labels)
        self.post_init()

    def forward(self, vqa_labels=None, vqa_scores=None, **kwargs) -> VLEHeadOutput:
        out = self._encode(kwargs)
        logits = self.vqa_classifier(out.pooler_output)  # (batch, answers)
        loss = None
        if vqa_labels is not None:
            if vqa_scores is None:
                vqa_scores = [[1.0] * len(labels) for labels in vqa_labels]
            target = torch.zeros_like(logits)
            for item, (labels, scores) in enumerate(zip(vqa_labels, vqa_scores)):
                for label, score in zip(labels, scores):
                    target[item, int(label)] = float(score)
            loss = F.binary_cross_entropy_with_logits(logits, target) * logits.shape[1]
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)


class ITMHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc = nn.Linear(hidden, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class VLEMLMPredictions(nn.Module):
    """DeBERTa's legacy MLM prediction head (the checkpoints' ``predictions.*`` layout); the decoder weight is tied to
    the word embeddings and its bias is ``predictions.bias``."""

    def __init__(self, text_config):
        super().__init__()
        hidden = text_config.hidden_size
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(hidden, hidden)
        self.transform.LayerNorm = nn.LayerNorm(hidden, eps=text_config.layer_norm_eps)
        self.act = ACT2FN[text_config.hidden_act]
        self.decoder = nn.Linear(hidden, text_config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(text_config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.transform.LayerNorm(self.act(self.transform.dense(hidden)))
        return self.decoder(hidden)


class VLEMLMHead(nn.Module):
    def __init__(self, text_config):
        super().__init__()
        self.predictions = VLEMLMPredictions(text_config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


def mask_patches(pixel_values: torch.Tensor, patch_ids, patch_size: int) -> torch.Tensor:
    """Zero (the normalised mean colour) every pixel of the listed patches ([batch][box][patch]); a new tensor."""
    grid = pixel_values.shape[-1] // patch_size
    masked = pixel_values.clone()
    for item, boxes in enumerate(patch_ids):
        for patches in boxes:
            for index in patches:
                row, col = divmod(int(index), grid)
                masked[item, :, row * patch_size:(row + 1) * patch_size, col * patch_size:(col + 1) * patch_size] = 0
    return masked


class _PretrainingHeads(VLEHeadModel):
    """The four pretraining heads (ITM, PBC, MLM, MPC): how each is built and computed. Each public class builds the
    heads it names in ``heads``; ``VLEForPretraining`` builds all four on one shared encoder."""

    heads: tuple[str, ...] = ()
    _tied_mlm = {
        "mlm_score.1.predictions.decoder.weight": "vle.text_model.embeddings.word_embeddings.weight",
        "mlm_score.1.predictions.decoder.bias": "mlm_score.1.predictions.bias",
    }

    def __init__(self, config: VLEConfig):
        super().__init__(config)
        hidden = config.hidden_size
        if "itm" in self.heads:
            self.itm_score = ITMHead(2 * hidden)
        if "pbc" in self.heads:
            self.pbc_classifier = _sequential_head(hidden, hidden, 2)
        if "mlm" in self.heads:
            text_config = config.text_config
            self.mlm_score = nn.Sequential(nn.Linear(hidden, text_config.hidden_size), VLEMLMHead(text_config))
        if "mpc" in self.heads:
            num_classes = len(getattr(config, "mpc_labels", None) or ()) or 2
            self.mpc_classifier = _sequential_head(hidden, hidden, num_classes)
        self.post_init()

    def tie_weights(self, *args, **kwargs):
        super().tie_weights(*args, **kwargs)
        if "mlm" in self.heads:
            predictions = self.mlm_score[1].predictions
            words = self.vle.text_model.embeddings.word_embeddings.weight
            if predictions.bias.is_meta:  # a new MLM head on a checkpoint without one: the loader leaves it unmade
                predictions.bias = nn.Parameter(torch.zeros(predictions.bias.shape, dtype=words.dtype, device=words.device))
            predictions.decoder.weight = words
            predictions.decoder.bias = predictions.bias

    def reads_pooled_only(self, task: str | None = None) -> bool:
        return (task or self.heads[0]) == "itm"  # PBC, MLM and MPC read the fused token states

    def _encode_tokens(self, kwargs, task: str) -> VLEModelOutput:
        if kwargs.get("pooled_only"):
            raise ValueError(f"{task.upper()} reads the fused token states, which pooled_only leaves out")
        return self._encode(kwargs)

    def _itm(self, kwargs, labels) -> VLEHeadOutput:
        out = self._encode(kwargs)
        logits = self.itm_score(out.pooler_output)  # (batch, 2)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)

    def _pbc(self, kwargs, labels) -> VLEHeadOutput:
        out = self._encode_tokens(kwargs, "pbc")
        logits = self.pbc_classifier(out.image_embeds[:, 1:])  # (batch, patches + boxes, 2)
        loss = None
        if labels is not None:
            labels = labels[:, : logits.shape[1]]
            loss = F.cross_entropy(logits[:, : labels.shape[1]].reshape(-1, 2), labels.reshape(-1), ignore_index=-100)
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)

    def _mlm(self, kwargs, labels) -> VLEHeadOutput:
        out = self._encode_tokens(kwargs, "mlm")
        logits = self.mlm_score(out.text_embeds)  # (batch, text_len, vocab)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)

    def _mpc(self, kwargs, labels, patch_ids) -> VLEHeadOutput:
        if patch_ids is None:
            raise ValueError("MPC needs patch_ids: the boxes to mask and classify, [batch][box][patch index]")
        if kwargs.get("pixel_values") is None:
            raise ValueError("MPC needs pixel_values: it masks the boxes' pixels")
        kwargs["pixel_values"] = mask_patches(kwargs["pixel_values"], patch_ids, self.config.patch_size)
        out = self._encode_tokens(kwargs, "mpc")
        patches = out.image_embeds[:, 1:]  # (batch, patches, H)
        max_boxes = max(len(boxes) for boxes in patch_ids)
        pooled = patches.new_zeros(len(patch_ids), max_boxes, patches.shape[-1])
        for item, boxes in enumerate(patch_ids):
            for box, index in enumerate(boxes):
                pooled[item, box] = patches[item, torch.as_tensor(list(index), device=patches.device)].mean(0)
        logits = self.mpc_classifier(pooled)  # (batch, max boxes, classes)
        loss = None
        if labels is not None:
            labels = torch.as_tensor(labels, device=logits.device).reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, ignore_index=-100)
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)


@register_head
class VLEForITM(_PretrainingHeads):
    """Image-text matching: logits (batch, 2), class 1 = match."""

    task, heads, head_prefixes, explains = "itm", ("itm",), ("itm_score",), ("itm",)

    def forward(self, itm_labels=None, **kwargs) -> VLEHeadOutput:
        return self._itm(kwargs, itm_labels)


@register_head
class VLEForPBC(_PretrainingHeads):
    """Patch-box classification: logits (batch, patches [+ boxes], 2), class 1 = the patch belongs to what the text
    describes. ``pbc_labels`` (batch, patches) with -100 for patches to ignore."""

    task, heads, head_prefixes, explains = "pbc", ("pbc",), ("pbc_classifier",), ("pbc",)

    def forward(self, pbc_labels=None, **kwargs) -> VLEHeadOutput:
        return self._pbc(kwargs, pbc_labels)


@register_head
class VLEForMLM(_PretrainingHeads):
    """Masked language modelling over the fused text stream: logits (batch, text_len, vocab)."""

    task, heads, head_prefixes = "mlm", ("mlm",), ("mlm_score",)
    _tied_weights_keys = _PretrainingHeads._tied_mlm

    def forward(self, mlm_labels=None, **kwargs) -> VLEHeadOutput:
        return self._mlm(kwargs, mlm_labels)


@register_head
class VLEForMPC(_PretrainingHeads):
    """Masked patch-box classification (the paper's fourth objective): the pixels of each box in ``patch_ids``
    ([batch][box][patch index]) are blanked, and the class of the hidden object is predicted from the mean of the
    fused image states over the box's patches. Logits (batch, max boxes, classes); ``mpc_labels`` (batch, max boxes)
    with -100 for padding. ``config.mpc_labels`` names the classes."""

    task, heads, head_prefixes = "mpc", ("mpc",), ("mpc_classifier",)

    def mask_patches(self, pixel_values: torch.Tensor, patch_ids) -> torch.Tensor:
        return mask_patches(pixel_values, patch_ids, self.config.patch_size)

    def forward(self, patch_ids=None, mpc_labels=None, **kwargs) -> VLEHeadOutput:
        return self._mpc(kwargs, mpc_labels, patch_ids)


@register_head
class VLEForPretraining(_PretrainingHeads):
    """All four pretraining heads on one encoder, as the pretrained checkpoints hold them. ``forward(task=...)`` runs
    one objective: ``itm`` (``labels`` (batch,)), ``pbc`` ((batch, patches)), ``mlm`` ((batch, text_len)) or ``mpc``
    (``patch_ids`` of the boxes to mask, ``labels`` (batch, boxes))."""

    task, heads, explains = "pretraining", ("itm", "pbc", "mlm", "mpc"), ("itm", "pbc")
    head_prefixes = ("itm_score", "pbc_classifier", "mlm_score", "mpc_classifier")
    _tied_weights_keys = _PretrainingHeads._tied_mlm

    def head_kwargs(self, family: str) -> dict:
        return {"task": family}

    def forward(self, task: str = "itm", labels=None, patch_ids=None, **kwargs) -> VLEHeadOutput:
        if task == "mpc":
            return self._mpc(kwargs, labels, patch_ids)
        if task not in ("itm", "pbc", "mlm"):
            raise ValueError(f"unknown pretraining task {task!r}: itm, pbc, mlm or mpc")
        if patch_ids is not None:
            kwargs["patch_ids"] = patch_ids
        return getattr(self, f"_{task}")(kwargs, labels)


class _VLEForVCR(VLEHeadModel):
    """Multiple choice over C candidate texts per image: ``input_ids`` (batch, choices, text_len), ``pixel_values``
    (batch, 3, H, W), ``patch_ids`` [batch][choice][box][patch], ``extend_token_type_ids`` [batch][choice] of
    (image-added types, text types). The image tower runs once per image; logits (batch, choices)."""

    head_name = ""
    explains = ("vcr",)

    def __init__(self, config: VLEConfig):
        super().__init__(config)
        hidden = 2 * config.hidden_size
        setattr(self, self.head_name, _sequential_head(hidden, hidden, 1))
        self.post_init()

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, token_type_ids=None, patch_ids=None,
                extend_token_type_ids=None, labels=None, image_features=None, output_attentions=False,
                **kwargs) -> VLEHeadOutput:
        if input_ids is None or input_ids.dim() != 3:
            raise ValueError("VCR heads take input_ids of shape (batch, choices, text_len)")
        batch, choices, length = input_ids.shape
        flat = lambda t: None if t is None else t.reshape(batch * choices, length)  # noqa: E731
        if patch_ids is not None:
            if extend_token_type_ids is None:
                raise ValueError("patch_ids needs extend_token_type_ids: [batch][choice] of (image types, text types)")
            patch_ids = [patch_ids[b][c] for b in range(batch) for c in range(choices)]
            pairs = [extend_token_type_ids[b][c] for b in range(batch) for c in range(choices)]
            extend_token_type_ids = ([pair[0] for pair in pairs], [pair[1] for pair in pairs])
        if image_features is None:
            image_features = self.vle.get_image_features(pixel_values)  # once per image, shared by its choices
        out = self.vle(input_ids=flat(input_ids), attention_mask=flat(attention_mask),
                       token_type_ids=flat(token_type_ids), patch_ids=patch_ids,
                       extend_token_type_ids=extend_token_type_ids, image_features=image_features,
                       output_attentions=output_attentions, **kwargs)
        logits = getattr(self, self.head_name)(out.pooler_output).view(batch, choices)
        loss = F.cross_entropy(logits, torch.as_tensor(labels, device=logits.device)) if labels is not None else None
        return VLEHeadOutput(loss=loss, logits=logits, vle_output=out)


@register_head
class VLEForVCRQ2A(_VLEForVCR):
    """VCR question → answer: picks one of the answer choices."""

    task, head_name, head_prefixes = "vcr_q2a", "vcr_q2a_logit", ("vcr_q2a_logit",)


@register_head
class VLEForVCRQA2R(_VLEForVCR):
    """VCR question + answer → rationale: picks one of the rationale choices."""

    task, head_name, head_prefixes = "vcr_qa2r", "vcr_qa2r_logit", ("vcr_qa2r_logit",)



AutoModel.register(VLEConfig, VLEModel, exist_ok=True)
