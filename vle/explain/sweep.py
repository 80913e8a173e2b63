"""Many interventions on one example from one traced run: the engine of ``vle-workbench ablate`` and of the "What if"
explorer's layer × head grid.

``FusionTrace`` runs the model once and keeps, for every fusion layer of both streams, what went in and what came out
of its blocks. A change to one attention block at layer i then reruns the model from that block on: the image tower,
the text tower and the fusion layers before i are read from the trace, and so is layer i + 1's self-attention of the
stream the change has not reached yet (both streams read the other's previous states, so a change in one stream
reaches the other a layer later). One rerun can cover a batch of changes: one per attention head of a site.

Example:
    >>> import torch
    >>> from vle import VLEConfig, VLEForVQA
    >>> model = VLEForVQA(VLEConfig.tiny()).eval()
    >>> inputs = dict(input_ids=torch.tensor([[1, 5, 6, 2]]), pixel_values=torch.zeros(1, 3, 32, 32))
    >>> trace = FusionTrace(model, inputs)
    >>> attended = trace.attended["fusion.text.0.cross_attention"]  # (1, query_len, H): the block as it ran
    >>> torch.allclose(trace.logits_with("fusion.text.0.cross_attention", attended), trace.logits, atol=1e-6)
    True
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .interventions import (SITE, _head_slices, _replacements, ablate, attention_sites, hooked, replace_heads,
                            site_module, with_image_features)
from .recorder import base_model

# Heads whose logits are one module applied to the pooled pair: task → that module's attribute name. A head not
# listed here is swept by full runs instead (``FusionTrace.supports``).
POOLED_HEADS = {"vqa": "vqa_classifier"}
_OTHER = {"text": "image", "image": "text"}


class FusionTrace:
    """One run of ``model`` on ``inputs`` (batch 1) with every fusion layer's inputs and block outputs kept.

    ``logits`` (1, classes): the run's logits. ``attended[site]`` (1, query_len, H): each attention site's output (its
    heads' outputs side by side, before the block's output projection). ``logits_with(site, attended)`` reruns from
    that site with its output replaced by ``attended`` (batch, query_len, H) and returns (batch, classes)."""

    # Rows rerun together: a few long sequences at a time (on a CPU, 1297 image tokens run faster one by one than
    # twelve at once, whose activations leave the caches), many short ones (whose rows alone leave cores idle).
    TOKENS_PER_RERUN = 2048

    def __init__(self, model, inputs: dict):
        if not self.supports(model, inputs):
            raise ValueError(f"{type(model).__name__} is not traced (a head over the pooled pair, batch 1, no boxes)")
        vle = base_model(model)
        self.model, self.vle = model, vle
        self.layers = {"text": list(vle.cross_modal_text_layers), "image": list(vle.cross_modal_image_layers)}
        self.calls: dict[tuple[str, int], tuple] = {}  # (stream, layer) → the layer's positional arguments
        self.outputs: dict[tuple[str, int], torch.Tensor] = {}  # (stream, layer) → its output (1, query_len, H)
        self.after_self: dict[tuple[str, int], torch.Tensor] = {}  # after the self-attention block (1, query_len, H)
        self.attended: dict[str, torch.Tensor] = {}
        hooks = []
        for stream, layers in self.layers.items():
            for i, layer in enumerate(layers):
                site = f"fusion.{stream}.{i}"
                hooks += [(layer, self._keep_call(stream, i)),
                          (layer.attention, self._keep(self.after_self, (stream, i))),
                          (layer.attention.self, self._keep(self.attended, f"{site}.self_attention")),
                          (layer.crossattention.self, self._keep(self.attended, f"{site}.cross_attention"))]
        with hooked(hooks), torch.no_grad():
            self.logits = model(**inputs, pooled_only=True).logits
        self.rows_per_rerun = max(1, self.TOKENS_PER_RERUN // self.outputs["image", 0].shape[1])

    @staticmethod
    def supports(model, inputs: dict) -> bool:
        """Whether the model's head reads only the pooled pair through one module, on one example without boxes, in
        evaluation mode (a rerun applies no dropout), with no hooks on the fusion (a rerun computes some blocks by
        other means, which an intervention already in place, such as an outer ``ablate``, would not see)."""
        ids = inputs.get("input_ids")
        vle = base_model(model)
        hooked_fusion = any(m._forward_hooks or m._forward_pre_hooks for layers in
                            (vle.cross_modal_text_layers, vle.cross_modal_image_layers) for m in layers.modules())
        return (getattr(model, "task", None) in POOLED_HEADS and inputs.get("patch_ids") is None
                and ids is not None and len(ids) == 1 and not model.training and not hooked_fusion)

    def _keep_call(self, stream: str, index: int):
        def hook(_module, args, output):
            self.calls[stream, index] = args  # (hidden, other, self_mask, other_mask, first_only)
            self.outputs[stream, index] = output[0]
        return hook

    @staticmethod
    def _keep(into: dict, key):
        def hook(_module, _args, output):
            into[key] = output[0]
        return hook

    def _layer(self, stream: str, index: int, hidden, other, after_self=None, site: str | None = None,
               attended=None) -> torch.Tensor:
        """One fusion layer (the model's ``VLEFusionLayer.forward``, block by block): from its self-attention's output
        when ``after_self`` is given, with the ``site`` block's output replaced by ``attended``. Tensors of batch 1
        broadcast against the changed batch, so what a change has not reached is computed once."""
        layer = self.layers[stream][index]
        _, _, self_mask, other_mask, first_only = self.calls[stream, index]
        query = hidden[:, :1] if first_only else hidden
        if after_self is None:
            own = attended if site == "self_attention" else _attend(layer.attention.self, query, hidden, self_mask)
            after_self = layer.attention.output(own, query)
        if site == "cross_attention":
            after_cross = layer.crossattention.output(attended, after_self)
        else:
            after_cross = _cross(layer.crossattention, after_self, other, other_mask)
        return layer.output(layer.intermediate(after_cross), after_cross)

    def logits_with(self, site: str, attended: torch.Tensor) -> torch.Tensor:
        """(batch, classes): the run again with ``site``'s attention output replaced by ``attended`` (batch,
        query_len, H), one rerun per row, from that block on (``rows_per_rerun`` rows at a time)."""
        match = SITE.match(site)
        if match is None or site not in self.attended:
            raise ValueError(f"{site!r} is not an attention site of this trace")
        if len(attended) > self.rows_per_rerun:
            return torch.cat([self.logits_with(site, rows) for rows in attended.split(self.rows_per_rerun)])
        stream, start, kind = match.group(1), int(match.group(2)), match.group(3)
        other_stream = _OTHER[stream]
        hidden, other = self.calls[stream, start][:2]
        with torch.no_grad():
            states = {stream: self._layer(stream, start, hidden, other, self.after_self[stream, start]
                                          if kind == "cross_attention" else None, kind, attended),
                      other_stream: self.outputs[other_stream, start]}
            for index in range(start + 1, len(self.layers[stream])):
                # the stream the change has not reached yet attends to its own unchanged states: reuse that
                reuse = self.after_self[other_stream, index] if index == start + 1 else None
                states = {
                    stream: self._layer(stream, index, states[stream], states[other_stream]),
                    other_stream: self._layer(other_stream, index, states[other_stream], states[stream], reuse),
                }
            batch = len(attended)
            pooled = torch.cat([self.vle.cross_modal_text_pooler(states["text"].expand(batch, -1, -1)),
                                self.vle.cross_modal_image_pooler(states["image"].expand(batch, -1, -1))], dim=-1)
            return getattr(self.model, POOLED_HEADS[self.model.task])(pooled)


def _attend(block, query: torch.Tensor, context: torch.Tensor, mask) -> torch.Tensor:
    """``block(query, context, mask)[0]`` (a ``VLESelfAttention``: the heads' outputs before the output projection).
    When the queries are few and the context long (the text tokens reading 1297 image tokens, or the class token of
    ``pooled_only``'s last layer) the key and value projections move to the queries' side, which is exact:
    q · (W_k y + b_k) = (W_kᵀ q) · y + q · b_k, whose last term is the same for every key and cancels in the softmax,
    and Σ p (W_v y + b_v) = W_v (Σ p y) + b_v. It costs a multiply-add per query, head, key and hidden unit instead of
    one per key and hidden unit squared: cheaper while queries × heads stay below the hidden size."""
    batch, length, hidden = query.shape
    heads, width = block.num_heads, block.head_dim
    if length * heads >= hidden or context.shape[1] <= length:
        return block(query, context, mask)[0]
    q = block.query(query).view(batch, length, heads, width) * width ** -0.5
    keys_side = torch.einsum("bqhd,hdk->bhqk", q, block.key.weight.view(heads, width, hidden))  # (batch, heads, q, H)
    scores = keys_side @ context.transpose(1, 2).unsqueeze(1)  # (batch, heads, query_len, context_len)
    if mask is not None:
        scores = scores + mask  # (batch or 1, 1, 1, context_len)
    probs = scores.softmax(-1, dtype=torch.float32).to(context.dtype)
    mixed = probs @ context.unsqueeze(1)  # (batch, heads, query_len, H)
    values = torch.einsum("bhqk,hdk->bqhd", mixed, block.value.weight.view(heads, width, hidden))
    return (values + block.value.bias.view(heads, width)).reshape(len(values), length, hidden)


def _cross(block, query: torch.Tensor, context: torch.Tensor, mask) -> torch.Tensor:
    """``block(query, context, mask)[0]`` (a ``VLEAttention``: attention, output projection, residual and layer norm).
    When many queries read a short context (1297 image tokens reading the text) the query and output projections move
    to the keys' side, which is exact: q · k = (W_q y + b_q) · k = y · (W_qᵀ k) + b_q · k, and W_o Σ_t p_t v_t =
    Σ_t p_t (W_o v_t). Both then cost a multiply-add per query, head, key and hidden unit instead of one per query and
    hidden unit squared: cheaper while heads × keys stay below the hidden size."""
    attention = block.self
    _, length, hidden = query.shape
    batch = max(len(query), len(context))  # one of them may be batch 1, unchanged by what is rerun
    keys, heads, width = context.shape[1], attention.num_heads, attention.head_dim
    if keys * heads >= hidden or length <= keys:
        return block(query, context, mask)[0]
    scale = width ** -0.5
    key = attention.key(context).view(len(context), keys, heads, width)
    value = attention.value(context).view(len(context), keys, heads, width)
    # (context batch, heads * keys, H): each key seen from the query's side, and each value already projected out
    reads = torch.einsum("bnhd,hdk->bhnk", key, attention.query.weight.view(heads, width, hidden)) * scale
    offsets = torch.einsum("bnhd,hd->bhn", key, attention.query.bias.view(heads, width)) * scale
    writes = torch.einsum("bnhd,khd->bhnk", value, block.output.dense.weight.view(hidden, heads, width))
    scores = (query @ reads.reshape(len(reads), heads * keys, hidden).transpose(1, 2)).view(batch, length, heads, keys)
    scores = scores + offsets.unsqueeze(1)  # (batch, query_len, heads, keys)
    if mask is not None:
        scores = scores + mask.view(len(mask), 1, 1, keys)
    probs = scores.softmax(-1, dtype=torch.float32).to(query.dtype).view(batch, length, heads * keys)
    projected = probs @ writes.reshape(len(writes), heads * keys, hidden) + block.output.dense.bias
    return block.output.LayerNorm(block.output.dropout(projected) + query)


def ablation_sweep(model, inputs: dict, answer: int | None = None, sites=None, mode: str = "zero",
                   means: dict | None = None, source: dict | None = None, progress: bool = False) -> dict:
    """Every attention head of every site in ``sites`` (default: all) ablated in turn (``mode`` and its reference as
    in ``ablate``), on one example: ``index``, the answer followed (``answer``, or the top answer with every head), its
    ``probability`` with every head, and per (site, head) in ``effects`` its probability with that head ablated and
    the change. The image tower runs once; on a traced head (``FusionTrace``) each head reruns from its site on (the
    heads of a short sequence together), else each head is one run of the fusion. ``progress``: a bar over the sites
    (a sweep of vle-base takes minutes on a CPU)."""
    sites = list(sites) if sites is not None else attention_sites(model)
    batch = with_image_features(model, inputs)
    replacements = _replacements(model, {site: "all" for site in sites}, mode, means, source)
    with torch.no_grad():
        trace = FusionTrace(model, batch) if FusionTrace.supports(model, batch) else None
        logits = trace.logits if trace is not None else model(**batch).logits
        probabilities = logits.float().softmax(-1)[0]
        answer = int(probabilities.argmax()) if answer is None else answer
        baseline = float(probabilities[answer])
        effects = []
        for site in tqdm(sites, desc="ablation sweep", unit="site", disable=not progress, leave=False):
            heads = site_module(model, site)[0].num_heads
            if trace is not None:
                attended = trace.attended[site]  # (1, query_len, H)
                ablated = torch.cat([replace_heads(attended, _head_slices(site_module(model, site)[0], [head]),
                                                   replacements[site], site) for head in range(heads)])
                probability = trace.logits_with(site, ablated).float().softmax(-1)[:, answer].tolist()
            else:
                probability = []
                for head in range(heads):
                    with ablate(model, {site: [head]}, mode=mode, means=means, source=source):
                        probability.append(float(model(**batch).logits.float().softmax(-1)[0, answer]))
            effects += [{"site": site, "head": head, "probability": p, "delta": p - baseline}
                        for head, p in enumerate(probability)]
    return {"index": answer, "probability": baseline, "effects": effects}
