"""Interventions on VLE's fusion, addressed by the recorder's site names, as context managers that always restore the
model (their hooks are removed on leaving the block, also on an exception).

    fusion.{text|image}.{i}.{self_attention|cross_attention}   an attention block: its attention heads' outputs
    fusion.{text|image}.{i}.hidden                             a fusion layer's output states (batch, len, H)

- ``ablate(model, {site: heads})``: the chosen attention heads of each block output zero (``mode="zero"``), their
  mean over a reference set of examples (``mode="mean"``, ``means`` from ``head_means`` or ``shapes_reference_means``)
  or their output on another example (``mode="resample"``, ``source`` from ``record_heads``); ``heads="all"`` knocks
  out the whole sublayer's attention.
- ``record_states(model)`` keeps every fusion layer's output of one run; ``patch(model, states, sites, positions)``
  writes them into another run (all positions, the class token, or chosen positions), the activation patching of
  causal tracing; ``recovered_fraction`` normalises its effect on a logit difference.

Example:
    >>> import torch
    >>> from vle import VLEConfig, VLEForVQA
    >>> model = VLEForVQA(VLEConfig.tiny()).eval()
    >>> inputs = dict(input_ids=torch.tensor([[1, 5, 6, 2]]), pixel_values=torch.zeros(1, 3, 32, 32))
    >>> with ablate(model, {"fusion.text.0.cross_attention": [0, 1]}):
    ...     changed = model(**inputs).logits
    >>> bool(torch.equal(model(**inputs).logits, changed))
    False
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from itertools import islice

import torch

from ..errors import InputError
from .recorder import base_model

SITE = re.compile(r"^fusion\.(text|image)\.(\d+)\.(self_attention|cross_attention|hidden)$")
MODES = ("zero", "mean", "resample")
REFERENCE_SEED = 1_000_500  # held-out shapes scenes, apart from the evaluation seeds


def fusion_layer(model, stream: str, index: int):
    vle = base_model(model)
    layers = vle.cross_modal_text_layers if stream == "text" else vle.cross_modal_image_layers
    if not 0 <= index < len(layers):
        raise InputError(f"the fusion has {len(layers)} layers (0..{len(layers) - 1}), not layer {index}")
    return layers[index]


def site_module(model, site: str):
    """(module, kind) of a site name: the attention block (``VLESelfAttention``) or the fusion layer."""
    match = SITE.match(site) if isinstance(site, str) else None
    if match is None:
        raise InputError(f"unknown site {site!r}: sites are fusion.text|image.<layer>.self_attention|cross_attention|"
                         "hidden")
    stream, index, kind = match.group(1), int(match.group(2)), match.group(3)
    layer = fusion_layer(model, stream, index)
    if kind == "hidden":
        return layer, kind
    return (layer.attention if kind == "self_attention" else layer.crossattention).self, kind


def attention_sites(model, which: str = "all") -> list[str]:
    """Every attention block's site name: ``cross``, ``self`` or ``all``."""
    kinds = {"cross": ("cross_attention",), "self": ("self_attention",), "all": ("self_attention", "cross_attention")}
    if which not in kinds:
        raise InputError(f"sites must be one of {', '.join(kinds)}, got {which!r}")
    layers = len(base_model(model).cross_modal_text_layers)
    return [f"fusion.{stream}.{i}.{kind}" for stream in ("text", "image") for i in range(layers)
            for kind in kinds[which]]


@contextmanager
def hooked(hooks):
    """Register (module, hook) forward hooks for the block; always removed."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _head_slices(module, heads) -> list[slice]:
    count, width = module.num_heads, module.head_dim
    chosen = range(count) if heads == "all" else heads
    slices = []
    for head in chosen:
        if isinstance(head, bool) or not isinstance(head, int) or not -count <= head < count:
            raise InputError(f"attention head {head!r} is out of range: the fusion blocks have {count} heads")
        head %= count
        slices.append(slice(head * width, (head + 1) * width))
    return slices


@contextmanager
def ablate(model, heads: dict, mode: str = "zero", means: dict | None = None, source: dict | None = None):
    """Ablate attention heads: ``heads`` maps attention sites to a list of head indices or ``"all"``. ``mode``:
    ``zero`` (their output is zero), ``mean`` (their mean output over a reference set: ``means`` from
    ``head_means``) or ``resample`` (their output on another example of the same lengths: ``source`` from
    ``record_heads``)."""
    replacements = _replacements(model, heads, mode, means, source)
    hooks = []
    for site, chosen in heads.items():
        module = site_module(model, site)[0]
        slices, replacement = _head_slices(module, chosen), replacements.get(site)

        def hook(_module, _args, output, slices=slices, replacement=replacement, site=site):
            return (replace_heads(output[0], slices, replacement, site), *output[1:])
        hooks.append((module, hook))
    with hooked(hooks):
        yield


def _replacements(model, heads: dict, mode: str, means: dict | None, source: dict | None) -> dict:
    """site → what its ablated heads output instead (None: zero), checked before anything runs."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    reference = {"zero": None, "mean": means, "resample": source}[mode]
    if mode != "zero" and reference is None:
        raise InputError("mode='mean' needs the heads' reference means (head_means(model, reference_inputs))"
                         if mode == "mean" else "mode='resample' needs the heads' outputs on another example "
                         "(source=record_heads(model, other_inputs))")
    replacements = {}
    for site in heads:
        if site_module(model, site)[1] == "hidden":
            raise InputError(f"{site} is a layer's output, not an attention block: ablate self_attention or "
                             "cross_attention sites")
        if reference is not None and reference.get(site) is None:
            raise InputError(f"no {'reference mean' if mode == 'mean' else 'recorded output'} for {site}")
        replacements[site] = None if reference is None else reference[site]
    return replacements


def replace_heads(attended: torch.Tensor, slices: list[slice], replacement, site: str = "") -> torch.Tensor:
    """``attended`` (batch, query_len, H) with the heads' ``slices`` replaced by zero (``replacement`` None), a mean
    (H,) or another run's outputs (batch or 1, query_len or 1, H)."""
    attended = attended.clone()
    if replacement is not None and replacement.dim() == 3:
        if attended.shape[1] == 1:  # a run of the class token alone (``pooled_only``'s last layer)
            replacement = replacement[:, :1]
        if replacement.shape[1] != attended.shape[1] or replacement.shape[0] not in (1, attended.shape[0]):
            raise InputError(f"{site}: the other example's output has shape {tuple(replacement.shape)} and this "
                             f"run's {tuple(attended.shape)}: resample from an example of the same lengths")
    for part in slices:
        attended[..., part] = 0.0 if replacement is None else replacement[..., part].to(attended.dtype)
    return attended


def head_means(model, batches, sites=None) -> dict[str, torch.Tensor]:
    """Each attention site's output averaged over every position of every example in ``batches`` (an iterable of
    model input dicts): site → (H,), the reference for ``ablate(mode="mean")``."""
    sites = list(sites) if sites is not None else attention_sites(model)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def keep(site):
        def hook(_module, _args, output):
            flat = output[0].detach().float().reshape(-1, output[0].shape[-1])  # (batch * query_len, H)
            sums[site] = sums.get(site, 0) + flat.sum(0)
            counts[site] = counts.get(site, 0) + flat.shape[0]
        return hook
    with hooked([(site_module(model, site)[0], keep(site)) for site in sites]), torch.no_grad():
        for batch in batches:
            model(**batch)
    return {site: sums[site] / counts[site] for site in sums}


def shapes_reference_means(model, processor, sites=None, seed: int = REFERENCE_SEED, count: int = 24) -> dict:
    """``head_means`` over ``count`` questions about held-out shapes scenes from ``seed``: the mean-ablation reference
    of the command line and the "What if" explorer."""
    from ..data import shapes_source  # the data sources are needed here only
    from ..pipelines import to_model

    examples = islice(shapes_source(seed, count).examples(), count)
    batches = [to_model(model, dict(processor(text=e.text, images=e.image()))) for e in examples]
    return head_means(model, batches, sites)


def hidden_sites(model) -> list[str]:
    """Every fusion layer's output: ``fusion.{text|image}.{i}.hidden``."""
    layers = len(base_model(model).cross_modal_text_layers)
    return [f"fusion.{stream}.{i}.hidden" for stream in ("text", "image") for i in range(layers)]


def record(model, inputs: dict, sites, **run) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One run of ``inputs`` (with ``run``'s extra arguments, e.g. ``pooled_only``) keeping the output of each site:
    (site → (batch, len, H), the run's logits)."""
    outputs = {}

    def keep(site):
        def hook(_module, _args, output):
            outputs[site] = output[0].detach().clone()
        return hook
    with hooked([(site_module(model, site)[0], keep(site)) for site in sites]), torch.no_grad():
        logits = model(**inputs, **run).logits
    return outputs, logits


def with_image_features(model, inputs: dict) -> dict:
    """The inputs with the image tower's output in place of the pixels (computed without gradients), so that runs
    which change only the fusion skip the tower."""
    batch = dict(inputs)
    if "pixel_values" in batch:
        with torch.no_grad():
            batch["image_features"] = base_model(model).get_image_features(batch.pop("pixel_values"))
    return batch


def record_heads(model, inputs: dict, sites=None) -> dict[str, torch.Tensor]:
    """Each attention site's output (its heads' outputs side by side) on one run of ``inputs``: site → (batch,
    query_len, H), the ``source`` of ``ablate(mode="resample")``."""
    return record(model, inputs, list(sites) if sites is not None else attention_sites(model))[0]


def record_states(model, inputs: dict) -> dict[str, torch.Tensor]:
    """Every fusion layer's output states of one run of ``inputs``: ``fusion.{stream}.{i}.hidden`` → (batch, len, H)."""
    return record(model, inputs, hidden_sites(model))[0]


@contextmanager
def patch(model, states: dict, sites=None, positions="all"):
    """Write recorded layer outputs (``record_states`` of a source run) into the runs inside the block, at the
    ``sites`` given (default: all recorded) and ``positions``: ``all`` (the source and target must have the same
    length there), ``cls`` (the class token), or a list of token / patch indices."""
    sites = list(sites) if sites is not None else list(states)
    hooks = []
    for site in sites:
        module, kind = site_module(model, site)
        if kind != "hidden":
            raise InputError(f"{site}: patch layer outputs (fusion.<stream>.<layer>.hidden sites)")
        if site not in states:
            raise InputError(f"nothing recorded for {site}")
        source = states[site]

        def hook(_module, _args, output, source=source, site=site):
            target = output[0].clone()  # (batch, len, H)
            if target.shape[1] == 1 and source.shape[1] > 1:  # a run of the class token alone (``pooled_only``)
                source = source[:, :1]
            if positions == "all":
                if target.shape[1:] != source.shape[1:] or source.shape[0] not in (1, target.shape[0]):
                    raise InputError(f"{site}: the source has shape {tuple(source.shape)} and the target "
                                     f"{tuple(target.shape)}: patch the class token (positions='cls') or chosen "
                                     "positions when the lengths differ")
                target = source.to(target.dtype).expand_as(target).clone()
            else:
                chosen = [0] if positions == "cls" else list(positions)
                if max(chosen) >= min(target.shape[1], source.shape[1]):
                    raise InputError(f"{site}: position {max(chosen)} is past the end of the source or target")
                target[:, chosen] = source[:, chosen].to(target.dtype)
            return (target, *output[1:])
        hooks.append((module, hook))
    with hooked(hooks):
        yield


def recovered_fraction(patched: float, clean: float, corrupted: float) -> float:
    """How much of the clean run's logit difference patching restores: (patched - corrupted) / (clean - corrupted);
    1 is all of it, 0 none (NaN when clean and corrupted agree)."""
    span = clean - corrupted
    return float("nan") if span == 0 else (patched - corrupted) / span
