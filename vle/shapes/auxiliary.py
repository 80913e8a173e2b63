"""Training-only heads and losses of the shapes-world recipes. None of them is shipped: they shape what the encoder
learns from the world's ground truth, and the task heads that are shipped read what they built.

- ``PatchProbe``: what each patch shows (``world.patch_attributes``), read linearly from the image tower's output.
  This dense signal makes the tower object-centric within a few hundred steps (every patch knows the colour, shape,
  size and centre of its object, and one patch per object says "centre here"). Without it the towers keep neither
  shape nor position, and questions that must find an object stay at their majority answer for thousands of steps.
- ``ObjectPointers``: for texts that name objects by colour, the colour word's state after the first fusion layer
  must give its object's centre, and the pooled pair the task heads read must give the centres of the first and the
  second object the text names, and of the question's subject (the object whose attribute is the answer, e.g. the
  object nearest to the named one). Comparing two named objects (left of, above, a caption's relation) needs both
  positions in the pooled pair, each in its role; the yes / no answer alone gives almost no gradient towards that
  while the model is at chance (the sign of a difference it has not formed yet), and these targets give a direct one.
  The subject's centre likewise rewards attending to the right object before its attribute can be read.
- ``grounding_head``: a PBC head on the fused patches asked to mark the answer's evidence objects.
- ``TagLosses``: for VCR texts, which name objects only by tags, each tag word's attention in the first fusion layer
  must fall on its own box token (the one with its token type), and for "is [a] nearer to [b] or to [c] ?" each
  choice's pooled pair must give the offsets [x] - [a] and [y] - [a] of the answer's object x and the other one asked
  about, y. Left alone, a tag finds its box only in the last fusion layer, too late for any comparison of tagged
  objects (``benchmarks/probe_vcr.py``), and "nearer" stays at chance.

>>> import torch
>>> probe = PatchProbe(16)
>>> truth = {"color": torch.zeros(2, 4, dtype=torch.long), "shape": torch.zeros(2, 4, dtype=torch.long),
...          "size": torch.zeros(2, 4, dtype=torch.long), "center": torch.zeros(2, 4, dtype=torch.long),
...          "position": torch.zeros(2, 4, 2)}
>>> probe.loss(torch.randn(2, 4, 16), truth).shape
torch.Size([])
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..modeling_vle import _sequential_head
from .data import color_token_ids
from .world import COLORS, SHAPES, SIZES

# the read-outs of PatchProbe, in order: classes per patch (0 = no object) for the categorical ones
PATCH_READOUTS: dict[str, int] = {"color": 1 + len(COLORS), "shape": 1 + len(SHAPES), "size": 1 + len(SIZES),
                                  "center": 2, "position": 2}
# squared errors of positions in [0, 1] are small next to cross-entropies; this puts them on a par
POSITION_WEIGHT = 10.0


class PatchProbe(torch.nn.Module):
    """A linear read-out of ``world.patch_attributes`` from image-tower features (batch, patches, Hv)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.read = torch.nn.Linear(hidden_size, sum(PATCH_READOUTS.values()))

    def loss(self, features: torch.Tensor, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of each categorical read-out plus the weighted squared error of the object centre (x, y in
        [0, 1]) on the patches an object covers. ``features`` (batch, patches, Hv): the patch tokens, CLS left out."""
        outputs = self.read(features).split(list(PATCH_READOUTS.values()), dim=-1)
        total = features.new_zeros(())
        for (name, classes), output in zip(PATCH_READOUTS.items(), outputs):
            if name == "position":
                covered = truth["color"] > 0  # (batch, patches)
                total = total + POSITION_WEIGHT * F.mse_loss(output[covered].sigmoid(), truth["position"][covered])
            else:
                total = total + F.cross_entropy(output.reshape(-1, classes), truth[name].reshape(-1))
        return total


class ObjectPointers(torch.nn.Module):
    """The probes of the two pointer losses and the tokenizer's colour word ids (looked up once, not every step)."""

    def __init__(self, hidden_size: int, tokenizer):
        super().__init__()
        self.word = torch.nn.Linear(hidden_size, 2)  # colour word state -> its object's centre
        # pooled pair -> centres of the first and the second named object, and of the subject
        self.pooled = torch.nn.Linear(2 * hidden_size, 6)
        self.color_ids = color_token_ids(tokenizer)

    def loss(self, word_states: torch.Tensor, pooled: torch.Tensor, words: dict[str, torch.Tensor],
             subjects: torch.Tensor | None = None) -> torch.Tensor:
        """``word_states`` (batch, text_len, H): the text stream after the first fusion layer; ``pooled`` (batch, 2H);
        ``words`` from ``data.color_words`` for the same batch; ``subjects`` (batch, 2) the subjects' centres, NaN
        where a text has none. Zero when the batch names no object by colour and has no subject."""
        read = self.pooled(pooled)  # (batch, 6)
        loss = pooled.new_zeros(())
        if subjects is not None and (known := ~subjects[:, 0].isnan()).any():
            loss = loss + F.mse_loss(read[known, 4:], subjects[known] - 0.5)
        rows, centers = words["rows"], words["centers"] - 0.5  # (n,), (n, 2) centred
        if not len(rows):
            return POSITION_WEIGHT * loss
        loss = loss + F.mse_loss(self.word(word_states[rows, words["columns"]]), centers)
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]  # the first colour word of its row
        second = torch.zeros_like(first)
        second[1:] = first[:-1] & (rows[1:] == rows[:-1])  # the one right after it, in the same row
        loss = loss + F.mse_loss(read[rows[first], :2], centers[first])
        if second.any():
            loss = loss + F.mse_loss(read[rows[second], 2:4], centers[second])
        return POSITION_WEIGHT * loss


def grounding_head(hidden_size: int, pbc_weights: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The auxiliary PBC head of a VQA stage (patch → evidence or not), from the pretrained PBC head's weights (the
    ``pbc_classifier.*`` entries of a checkpoint) when given."""
    head = _sequential_head(hidden_size, hidden_size, 2)
    prefix = "pbc_classifier."
    if pbc_weights and any(k.startswith(prefix) for k in pbc_weights):
        head.load_state_dict({k[len(prefix):]: v for k, v in pbc_weights.items() if k.startswith(prefix)})
    return head


def grounding_loss(head: torch.nn.Module, image_embeds: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the head's evidence call on each fused patch; ``evidence`` (batch, patches) is 0/1."""
    logits = head(image_embeds[:, 1:1 + evidence.shape[1]])  # (batch, patches, 2)
    return F.cross_entropy(logits.reshape(-1, 2), evidence.reshape(-1))


@contextmanager
def last_call(module):
    """Within the block, ``call["args"]`` and ``call["output"]`` hold the positional inputs and the output of
    ``module``'s last call (a plain hook: the model keeps its fused attention kernels)."""
    call = {}
    hook = module.register_forward_hook(lambda _, args, output: call.update(args=args, output=output))
    try:
        yield call
    finally:
        hook.remove()


def tag_boxes(extend_token_type_ids, image_len: int) -> dict[str, torch.Tensor]:
    """Every tag word of a flattened VCR batch and its box token: ``rows`` (item * choices + choice), ``columns`` (its
    position in the text), ``boxes`` (its box token's position in the image stream of ``image_len`` tokens: class and
    patch tokens, then the box tokens, as many as the batch's most). ``extend_token_type_ids`` is the batch's
    [item][choice] of (box types, text types)."""
    rows, columns, boxes = [], [], []
    pairs = [pair for per_item in extend_token_type_ids for pair in per_item]
    grid_tokens = image_len - max(len(box_types) for box_types, _ in pairs)
    for row, (box_types, text_types) in enumerate(pairs):
        where = {t: grid_tokens + k for k, t in enumerate(box_types)}
        for column, t in enumerate(text_types):
            if t >= 2:
                rows.append(row)
                columns.append(column)
                boxes.append(where[t])
    return {name: torch.tensor(values, dtype=torch.long)
            for name, values in (("rows", rows), ("columns", columns), ("boxes", boxes))}


class TagLosses(torch.nn.Module):
    """The two tag losses of ``tag_weight`` (see the module doc) and the read-out of the role offsets."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.roles = torch.nn.Linear(2 * hidden_size, 4)  # pooled pair -> ([x] - [a], [y] - [a]) / image size

    @staticmethod
    def own_box_attention(attention, hidden: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                          tags: dict[str, torch.Tensor]) -> torch.Tensor:
        """(tags, heads): the attention each tag word of ``tags`` (from ``tag_boxes``) puts on its own box,
        recomputed for the tag words alone from the inputs of ``attention`` (a text→image ``VLESelfAttention``):
        ``hidden`` (rows, text_len, H) the states its queries come from, ``context`` (rows, image_len, H) and
        ``context_mask`` (rows, 1, 1, image_len, additive) the image stream's."""
        rows = tags["rows"]
        query = attention._split(attention.query(hidden[rows, tags["columns"]][:, None]))  # (tags, heads, 1, dim)
        key = attention._split(attention.key(context[rows]))  # (tags, heads, image_len, dim)
        # the scores as the shipped vcr-tags model was trained with them; modeling_vle.attention_probabilities scales
        # the queries first, which agrees to float rounding but would not rebuild that checkpoint bit for bit
        scores = (query @ key.transpose(-1, -2)).squeeze(2) * attention.head_dim ** -0.5 + context_mask[rows][:, 0]
        return scores.softmax(-1)[torch.arange(len(rows)), :, tags["boxes"]]

    def binding(self, attention, hidden: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                tags: dict[str, torch.Tensor]) -> torch.Tensor:
        """-log of the head-mean attention each tag word puts on its own box (see ``own_box_attention``); zero
        without tags."""
        if not len(tags["rows"]):
            return hidden.new_zeros(())
        own = self.own_box_attention(attention, hidden, context, context_mask, tags)
        return -torch.log(own.mean(-1) + 1e-6).mean()

    def role_loss(self, pooled: torch.Tensor, roles: dict[str, torch.Tensor]) -> torch.Tensor:
        """Squared error of the offsets read from the pooled pairs of ``roles["rows"]`` (weighted like the other
        position losses); zero without "nearer" choices."""
        if not len(roles["rows"]):
            return pooled.new_zeros(())
        return POSITION_WEIGHT * F.mse_loss(self.roles(pooled[roles["rows"]]), roles["offsets"])
