"""Activation patching, exact and first-order: how much of a clean run's answer each fusion site carries.

A clean and a corrupted input of the same lengths (two scenes that differ in one attribute, asked the same question;
or one word replaced) give different answers. The metric is the logit difference ``logits[answer] - logits[foil]``
(by default the clean run's answer against the corrupted run's). Patching one site's activation from the clean run
into the corrupted run and measuring the metric says how much that site carries; ``recovered`` normalises it to
``recovered_fraction`` (1: all of the clean run's difference, 0: none).

- ``exact_patching``: every site patched in turn: each attention head (its output, from the clean run) and each
  fusion layer's output states (all positions). The heads of one site run as one batch from a ``FusionTrace``.
- ``attribution_patching``: the first-order estimate of every one of those effects from one clean run, one corrupted
  run and one backward pass through the fusion: (clean activation − corrupted activation) · ∂metric/∂activation.
- ``agreement``: the Spearman rank correlation of the estimates with the exact effects.

Example:
    >>> import torch
    >>> from vle import VLEConfig, VLEForVQA
    >>> model = VLEForVQA(VLEConfig.tiny(id2label={0: "red", 1: "blue"})).eval()
    >>> ids = torch.tensor([[1, 5, 6, 2]])
    >>> clean = dict(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32))
    >>> corrupted = dict(input_ids=ids, pixel_values=torch.ones(1, 3, 32, 32))
    >>> estimate = attribution_patching(model, clean, corrupted, answer=0, foil=1)
    >>> exact = exact_patching(model, clean, corrupted, answer=0, foil=1)
    >>> len(estimate["effects"]) == len(exact["effects"]) == 2 * 2 * 2 * 4 + 2 * 2
    True
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from ..errors import InputError
from .embedding_forward import frozen_parameters
from .interventions import (
    _head_slices,
    ablate,
    attention_sites,
    hidden_sites,
    hooked,
    patch,
    record,
    recovered_fraction,
    replace_heads,
    site_module,
    with_image_features,
)
from .sweep import FusionTrace


def _check_pair(clean: dict, corrupted: dict) -> None:
    for key in ("input_ids", "pixel_values", "image_features"):
        if key in clean and key in corrupted and clean[key].shape != corrupted[key].shape:
            raise InputError(f"the clean and corrupted inputs differ in shape ({key}: {tuple(clean[key].shape)} "
                             f"and {tuple(corrupted[key].shape)}): patching needs inputs of the same lengths")
    if len(clean["input_ids"]) != 1:
        raise InputError("patching compares one clean and one corrupted example (batch 1)")


def _targets(clean_logits, corrupted_logits, answer, foil) -> tuple[int, int]:
    answer = int(clean_logits[0].argmax()) if answer is None else int(answer)
    foil = int(corrupted_logits[0].argmax()) if foil is None else int(foil)
    if answer == foil:
        raise InputError(f"the clean and corrupted runs both answer {answer}: give the foil to compare against")
    return answer, foil


def _difference(logits, answer: int, foil: int) -> torch.Tensor:
    return logits[..., answer].float() - logits[..., foil].float()


def _result(answer, foil, clean: float, corrupted: float, effects: list[dict]) -> dict:
    for effect in effects:
        effect["recovered"] = recovered_fraction(corrupted + effect["effect"], clean, corrupted)
    return {"answer": answer, "foil": foil, "clean": clean, "corrupted": corrupted, "effects": effects}


def exact_patching(model, clean: dict, corrupted: dict, answer: int | None = None, foil: int | None = None,
                   sites=None) -> dict:
    """Every attention head of ``sites`` (default: all) and every fusion layer's output patched in turn from the
    clean run into the corrupted one: ``answer``, ``foil``, the metric of the ``clean`` and ``corrupted`` runs and per
    site (and ``head``, None for a layer's output) the change of the metric (``effect``) and ``recovered``."""
    _check_pair(clean, corrupted)
    sites = list(sites) if sites is not None else attention_sites(model)
    clean, corrupted = with_image_features(model, clean), with_image_features(model, corrupted)
    recorded, clean_logits = record(model, clean, sites + hidden_sites(model))  # heads and layer outputs, one run
    with torch.no_grad():
        trace = FusionTrace(model, corrupted) if FusionTrace.supports(model, corrupted) else None
        corrupted_logits = trace.logits if trace is not None else model(**corrupted).logits
        answer, foil = _targets(clean_logits, corrupted_logits, answer, foil)
        base = float(_difference(corrupted_logits[0], answer, foil))
        effects = []
        for site in sites:
            module = site_module(model, site)[0]
            if trace is not None:
                attended = trace.attended[site]
                patched = torch.cat([replace_heads(attended, _head_slices(module, [h]), recorded[site], site)
                                     for h in range(module.num_heads)])
                metrics = _difference(trace.logits_with(site, patched), answer, foil).tolist()
            else:
                metrics = []
                for h in range(module.num_heads):
                    with ablate(model, {site: [h]}, mode="resample", source=recorded):  # the clean run's head
                        metrics.append(float(_difference(model(**corrupted).logits[0], answer, foil)))
            effects += [{"site": site, "head": h, "effect": m - base} for h, m in enumerate(metrics)]
        for site in hidden_sites(model):
            with patch(model, recorded, sites=[site]):
                effects.append({"site": site, "head": None,
                                "effect": float(_difference(model(**corrupted).logits[0], answer, foil)) - base})
    return _result(answer, foil, float(_difference(clean_logits[0], answer, foil)), base, effects)


def _keep_with_gradient(into: dict, site: str):
    def hook(_module, _args, output):
        value = output[0]
        if not value.requires_grad:  # nothing before it is traced: it starts the graph (no path to it is cut)
            value = value.detach().requires_grad_()
        into[site] = value
        return (value, *output[1:])
    return hook


def attribution_patching(model, clean: dict, corrupted: dict, answer: int | None = None, foil: int | None = None,
                         sites=None) -> dict:
    """The first-order estimate of ``exact_patching``'s effects (same keys, ``effect`` estimated): one clean run, one
    corrupted run and one backward pass through the fusion."""
    _check_pair(clean, corrupted)
    sites = list(sites) if sites is not None else attention_sites(model)
    every = sites + hidden_sites(model)
    clean, corrupted = with_image_features(model, clean), with_image_features(model, corrupted)
    recorded, clean_logits = record(model, clean, every, pooled_only=model.reads_pooled_only())
    kept = {}
    with frozen_parameters(model), torch.enable_grad(), \
            hooked([(site_module(model, s)[0], _keep_with_gradient(kept, s)) for s in every]):
        corrupted_logits = model(**corrupted, pooled_only=model.reads_pooled_only()).logits
        answer, foil = _targets(clean_logits, corrupted_logits, answer, foil)
        metric = _difference(corrupted_logits[0], answer, foil)
        used = [s for s in every if kept[s].requires_grad]
        gradients = dict(zip(used, torch.autograd.grad(metric, [kept[s] for s in used], allow_unused=True)))
    effects = []
    for site in every:
        gradient = gradients.get(site)
        if gradient is None:  # the metric does not depend on it (the last layer's tokens past the class token)
            gradient = torch.zeros_like(kept[site])
        contribution = ((recorded[site] - kept[site].detach()) * gradient).float()  # (1, len, H)
        if site.endswith(".hidden"):
            effects.append({"site": site, "head": None, "effect": float(contribution.sum())})
            continue
        module = site_module(model, site)[0]
        effects += [{"site": site, "head": h, "effect": float(contribution[..., part].sum())}
                    for h, part in enumerate(_head_slices(module, "all"))]
    return _result(answer, foil, float(_difference(clean_logits[0], answer, foil)), float(metric.detach()), effects)


def agreement(estimated: dict, exact: dict) -> float:
    """Spearman's rank correlation between ``attribution_patching``'s effects and ``exact_patching``'s (matched by
    site and head); NaN when either is constant."""
    truth = {(e["site"], e["head"]): e["effect"] for e in exact["effects"]}
    pairs = np.array([(e["effect"], truth[e["site"], e["head"]]) for e in estimated["effects"]
                      if (e["site"], e["head"]) in truth])
    if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return float("nan")
    return float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic)
