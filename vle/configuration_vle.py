"""Configuration of VLE: a CLIP-ViT image tower, a DeBERTa-v3 text tower and co-attention fusion layers.

The nested ``text_config`` and ``vision_config`` are read from dicts the way the original checkpoints store them:
the text config by its ``model_type`` (``deberta-v2``), the vision config either as a bare ``clip_vision_model`` config
or as a full ``clip`` config of which only the vision part is kept.

Example:
    >>> from vle import VLEConfig
    >>> config = VLEConfig.tiny()
    >>> config.text_config.model_type, config.vision_config.model_type
    ('deberta-v2', 'clip_vision_model')
"""

from __future__ import annotations

from transformers import AutoConfig, CLIPConfig, CLIPVisionConfig, DebertaV2Config, PreTrainedConfig


def _text_config_from(value) -> PreTrainedConfig:
    if value is None:
        return DebertaV2Config()
    if isinstance(value, PreTrainedConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"text_config must be a dict or a PreTrainedConfig, got {type(value).__name__}")
    value = dict(value)
    model_type = value.pop("model_type", "deberta-v2")
    return AutoConfig.for_model(model_type, **value)


def _vision_config_from(value) -> CLIPVisionConfig:
    if value is None:
        return CLIPVisionConfig()
    if isinstance(value, CLIPConfig):
        return value.vision_config
    if isinstance(value, PreTrainedConfig):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"vision_config must be a dict or a PreTrainedConfig, got {type(value).__name__}")
    value = dict(value)
    model_type = value.pop("model_type", "clip_vision_model")
    if model_type == "clip":
        return CLIPConfig(**value).vision_config
    if model_type == "clip_vision_model":
        return CLIPVisionConfig(**value)
    return AutoConfig.for_model(model_type, **value)


class VLEConfig(PreTrainedConfig):
    """Fusion hyper-parameters plus the two nested tower configs.

    ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads`` and ``intermediate_size`` describe the
    co-attention fusion stack; ``num_token_types`` is 2 for pretraining and VQA, more for VCR (object tags).
    """

    model_type = "vle"

    text_config: PreTrainedConfig | dict | None = None
    vision_config: PreTrainedConfig | dict | None = None
    num_token_types: int = 2
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    mpc_labels: list[str] | None = None

    def __post_init__(self, **kwargs):
        self.text_config = _text_config_from(self.text_config)
        self.vision_config = _vision_config_from(self.vision_config)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        super().__post_init__(**kwargs)

    @property
    def image_size(self) -> int:
        return self.vision_config.image_size

    @property
    def patch_size(self) -> int:
        return self.vision_config.patch_size

    @property
    def patch_grid(self) -> int:
        """Patches per side of the square image."""
        return self.vision_config.image_size // self.vision_config.patch_size

    def to_dict(self) -> dict:
        output = super().to_dict()
        output["text_config"] = self.text_config.to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["model_type"] = self.model_type
        return output

    @classmethod
    def tiny(cls, **overrides) -> "VLEConfig":
        """A few-thousand-parameter VLE for tests and docstrings (random weights, 32-pixel images)."""
        text = dict(
            model_type="deberta-v2", vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, relative_attention=True, position_buckets=16,
            norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
            position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0,
        )
        vision = dict(
            model_type="clip_vision_model", hidden_size=24, intermediate_size=29, num_hidden_layers=2,
            num_attention_heads=4, image_size=32, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        )
        settings = dict(
            text_config=text, vision_config=vision, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=40,
        )
        settings.update(overrides)
        return cls(**settings)


AutoConfig.register("vle", VLEConfig, exist_ok=True)
