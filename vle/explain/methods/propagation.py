"""Shared by the attention methods: a recorded forward over the fusion layers, and relevance propagation through
VLE's two-stream co-attention (Chefer, Gur and Wolf, ICCV 2021, rules for self- and bi-modal attention).

The four fusion maps per layer are named ``ts`` (text self), ``tc`` (text → image cross), ``is`` (image self) and
``ic`` (image → text cross). Both streams of a layer read the other stream's previous-layer states, so a layer's
text update uses the image relevance from before the layer, and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs import forward
from ..recorder import Recorder
from .base import Attribution, Method

FAMILIES = {"ts": "fusion.text.{}.self_attention", "tc": "fusion.text.{}.cross_attention",
            "is": "fusion.image.{}.self_attention", "ic": "fusion.image.{}.cross_attention"}


def fusion_maps(model, inputs, target, grads: bool, hidden: bool = False, grad_reduce=None,
                grad_families=tuple(FAMILIES)):
    """Run the model once, recording the fusion attention maps (and, with ``hidden``, the fusion layer outputs).

    Returns (maps, grad_maps, output, recorded): ``maps[f]`` and ``grad_maps[f]`` are lists over layers of
    (sequences, heads, query_len, key_len), the gradients being those of the target score, or what ``grad_reduce``
    (see ``Recorder``) keeps of them, for the families ``grad_families`` (``grad_maps`` is None without
    ``grads=True``); ``recorded`` maps every recorded name to (tensor, gradient or None).
    """
    grads_of = [FAMILIES[f].format("*") for f in grad_families] + ["fusion.*.hidden"]
    with torch.set_grad_enabled(grads), Recorder(model, attentions=("fusion",), hidden=hidden,
                                                 grads=grads_of if grads else False, grad_reduce=grad_reduce) as rec:
        output = forward(model, inputs, target)
    if grads:  # every sequence's score depends on its own inputs only, so one backward of the sum serves them all
        rec.backward(target.score(output.logits).sum())
    layers = len(model.base_vle.cross_modal_text_layers)
    maps = {f: [rec[p.format(i)].detach() for i in range(layers)] for f, p in FAMILIES.items()}
    grad_maps = {f: [rec.grads[FAMILIES[f].format(i)] for i in range(layers)] for f in grad_families} if grads else None
    recorded = {n: (rec[n].detach(), rec.grads.get(n)) for n in rec.names()}
    return maps, grad_maps, output, recorded


@dataclass(frozen=True)
class Needs:
    """What a method reads from its one recorded forward: the target's gradients (``grads``) of the fusion maps of
    ``grad_families`` (reduced by ``grad_reduce``, see ``Recorder``) and of the hidden states, and the fusion layer
    outputs (``hidden``). Methods whose needs merge share one forward (``explain_batch``)."""

    grads: bool = False
    hidden: bool = False
    grad_families: tuple = ()
    grad_reduce: object = None

    def merge(self, other: "Needs") -> "Needs | None":
        """One recording that serves both, or None when their map gradients differ (families or reduction)."""
        if self.grad_families and other.grad_families and (self.grad_families, self.grad_reduce) != (
                other.grad_families, other.grad_reduce):
            return None
        families, reduce = ((self.grad_families, self.grad_reduce) if self.grad_families
                            else (other.grad_families, other.grad_reduce))
        return Needs(self.grads or other.grads, self.hidden or other.hidden, families, reduce)


@dataclass
class Recording:
    """One recorded forward (``fusion_maps``' results; ``logits`` of the head), for one sequence batch or a slice of
    one: ``row(i)`` is the i-th example of a batch, as a batch-1 recording."""

    maps: dict
    grad_maps: dict | None
    logits: torch.Tensor
    recorded: dict

    def row(self, index: int) -> "Recording":
        part = slice(index, index + 1)

        def cut(value):
            return value[part] if isinstance(value, torch.Tensor) else value
        return Recording({f: [cut(m) for m in layers] for f, layers in self.maps.items()},
                         None if self.grad_maps is None else
                         {f: [cut(m) for m in layers] for f, layers in self.grad_maps.items()},
                         cut(self.logits), {n: (cut(t), cut(g)) for n, (t, g) in self.recorded.items()})


def record(model, inputs, target, needs: Needs) -> Recording:
    """Run ``fusion_maps`` for ``needs``."""
    maps, grad_maps, output, recorded = fusion_maps(model, inputs, target, grads=needs.grads, hidden=needs.hidden,
                                                    grad_reduce=needs.grad_reduce, grad_families=needs.grad_families)
    return Recording(maps, grad_maps, output.logits, recorded)


class RecordedMethod(Method):
    """A method that reads everything from one recorded forward on the unperturbed input: ``needs(model)`` says what
    to record (checking the options first), ``from_recording`` computes the scores of one example. Such methods
    share one forward, and a batch of examples one batched forward (``explain_batch``)."""

    reads_one_forward = True

    def needs(self, model) -> Needs:
        return Needs()

    def from_recording(self, recording: Recording, inputs, target) -> Attribution:
        raise NotImplementedError

    def attribute(self, model, inputs, target) -> Attribution:
        return self.from_recording(record(model, inputs, target, self.needs(model)), inputs, target)


def _normalized(relevance: torch.Tensor) -> torch.Tensor:
    """R̄ = Ŝ + I, Ŝ = (R - I) with rows scaled to sum to one (rows with nothing to scale stay zero)."""
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    accumulated = relevance - eye
    return accumulated / accumulated.sum(-1, keepdim=True).clamp(min=1e-12) + eye


# How a cross-attention layer adds to the query stream's relevance over the other stream, R_qk += left(R_qq) Ā R̄_kk:
# ``chefer``: left = R̄_qqᵀ, the paper's rule; ``composed``: left = R̄_qq, as every other rule composes relevance (a
# query token's state is built from the tokens in its row of R_qq, and each of those attended to the other stream).
# ``composed`` is the default: it points better for co-attention relevance and rollout alike, on held-out questions
# of seeds that are never reported (docs/explanations.md has the numbers).
CROSS_RULES = {"composed": _normalized, "chefer": lambda r: _normalized(r).T}


def check_cross_rule(rule: str) -> None:
    if rule not in CROSS_RULES:
        raise ValueError(f"cross_rule must be one of {', '.join(CROSS_RULES)}, got {rule!r}")


def propagate(weighted: dict[str, list[torch.Tensor]], cross_rule: str = "composed") -> dict[str, torch.Tensor]:
    """Relevance maps after all fusion layers, for one sequence.

    ``weighted[f]`` are per-layer head-aggregated maps (query_len, key_len). Returns R_tt (T, T), R_ii (I, I),
    R_ti (T, I) and R_it (I, T): how much each token's final state owes to each input token, in float32 on the maps'
    device. ``cross_rule``: see ``CROSS_RULES``.
    """
    check_cross_rule(cross_rule)
    left = CROSS_RULES[cross_rule]
    weighted = {f: [m.float() for m in layers] for f, layers in weighted.items()}  # half-precision models too
    text_len, image_len = weighted["tc"][0].shape
    like = dict(device=weighted["tc"][0].device)
    r_tt, r_ii = torch.eye(text_len, **like), torch.eye(image_len, **like)
    r_ti, r_it = torch.zeros(text_len, image_len, **like), torch.zeros(image_len, text_len, **like)
    for ts, tc, is_, ic in zip(weighted["ts"], weighted["tc"], weighted["is"], weighted["ic"]):
        old_tt, old_ii, old_ti, old_it = r_tt, r_ii, r_ti, r_it
        # text stream: self-attention, then cross-attention to the previous-layer image stream
        r_tt, r_ti = old_tt + ts @ old_tt, old_ti + ts @ old_ti
        r_ti = r_ti + left(r_tt) @ tc @ _normalized(old_ii)
        r_tt = r_tt + tc @ old_it
        # image stream, symmetric, reading the previous-layer text stream
        r_ii, r_it = old_ii + is_ @ old_ii, old_it + is_ @ old_it
        r_it = r_it + left(r_ii) @ ic @ _normalized(old_tt)
        r_ii = r_ii + ic @ old_ti
    return {"tt": r_tt, "ii": r_ii, "ti": r_ti, "it": r_it}


# the read-out's named seeds: the weight of each CLS row (a caller may pass its own weights instead)
SEED_WEIGHTS = {"both": {"text": 1.0, "image": 1.0}, "text": {"text": 1.0}, "image": {"image": 1.0}}


def _without_self(row: torch.Tensor) -> torch.Tensor:
    """A CLS row of R less the identity the CLS token owes itself (its own index, 0)."""
    row = row.clone()
    row[0] -= 1.0
    return row


def read_out(relevance: dict[str, torch.Tensor], seed="both"):
    """Relevance of the image tokens (patches + boxes, CLS left out) and text tokens for the pooled output.

    VLE's pooler concatenates the text CLS and the image CLS states, so both rows seed the read-out: ``both`` adds
    them, ``text`` or ``image`` picks one, and a dict ``{"text": w, "image": w}`` weighs them. The identity a token
    owes itself is removed.
    """
    weights = seed if isinstance(seed, dict) else SEED_WEIGHTS.get(seed)
    if weights is None:
        raise ValueError(f"seed must be one of {', '.join(SEED_WEIGHTS)} or a dict of weights, got {seed!r}")
    # per seeding CLS: (its relevance over the image tokens, over the text tokens)
    rows = {"text": (relevance["ti"][0], _without_self(relevance["tt"][0])),
            "image": (_without_self(relevance["ii"][0]), relevance["it"][0])}
    image = sum(w * rows[s][0] for s, w in weights.items())
    text = sum(w * rows[s][1] for s, w in weights.items())
    return image[1:], text


def per_sequence(maps: dict[str, list[torch.Tensor]], sequence: int) -> dict[str, list[torch.Tensor]]:
    return {f: [layer[sequence] for layer in layers] for f, layers in maps.items()}


def relevance_for(weighted, inputs, target, seed, cross_rule: str = "composed"):
    """Image relevance summed over the target's sequences; text relevance of its first sequence."""
    image, text = None, None
    for sequence in inputs.flat_sequence_ids(target):
        image_part, text_part = read_out(propagate(per_sequence(weighted, sequence), cross_rule), seed)
        image = image_part if image is None else image + image_part
        text = text_part if text is None else text
    return image.clamp(min=0), text.clamp(min=0)
