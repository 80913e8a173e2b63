"""Interventions on the fusion (the groundwork of the "what if" explorer): an empty intervention changes nothing bit for
bit; patching every layer output from a source run reproduces the source's outputs; ablating the text stream's
cross-attention in every layer makes the text stream independent of the image; the model is restored after an
exception inside the block; mean ablation and recovered fractions."""

import math

import pytest
import torch

from vle import VLEConfig, VLEForVQA
from vle.errors import InputError
from vle.shapes.world import make_scene
from vle.explain.interventions import (ablate, attention_sites, head_means, hooked, patch, record_states,
                                       recovered_fraction, site_module)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VLEForVQA(VLEConfig.tiny(id2label={0: "red", 1: "blue", 2: "circle"})).eval()


def inputs(seed: int, ids=(1, 5, 6, 7, 2)):
    generator = torch.Generator().manual_seed(seed)
    return dict(input_ids=torch.tensor([ids]), pixel_values=torch.randn(1, 3, 32, 32, generator=generator))


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_an_empty_intervention_changes_nothing(model):
    batch = inputs(0)
    before = logits(model, batch)
    with ablate(model, {}), patch(model, {}, sites=[]):
        assert torch.equal(logits(model, batch), before)


def test_patching_every_layer_output_reproduces_the_source(model):
    source, target = inputs(1), inputs(2)
    states = record_states(model, source)
    with patch(model, states):
        assert torch.equal(logits(model, target), logits(model, source))
    assert not torch.equal(logits(model, target), logits(model, source))  # restored


def test_without_cross_attention_the_text_stream_ignores_the_image(model):
    sites = {site: "all" for site in attention_sites(model, "cross") if site.startswith("fusion.text")}
    with ablate(model, sites):
        first, second = record_states(model, inputs(3)), record_states(model, inputs(4))
    text = [site for site in first if site.startswith("fusion.text")]
    assert all(torch.equal(first[site], second[site]) for site in text)
    assert not all(torch.equal(first[site], second[site]) for site in first if site.startswith("fusion.image"))
    plain = record_states(model, inputs(3)), record_states(model, inputs(4))
    assert not torch.equal(plain[0][text[-1]], plain[1][text[-1]])


def test_the_model_is_restored_after_an_exception(model):
    batch = inputs(5)
    before = logits(model, batch)
    with pytest.raises(RuntimeError, match="inside"):
        with ablate(model, {site: "all" for site in attention_sites(model)}):
            assert not torch.equal(logits(model, batch), before)
            raise RuntimeError("inside the block")
    assert torch.equal(logits(model, batch), before)
    assert not any(module._forward_hooks for module in model.modules())


def test_mean_ablation_writes_the_reference_mean(model):
    site = "fusion.image.0.cross_attention"
    references = [inputs(6), inputs(7)]
    means = head_means(model, references, sites=[site])
    module = model.base_vle.cross_modal_image_layers[0].crossattention.self
    outputs = []
    handle = module.register_forward_hook(lambda m, a, output: outputs.append(output[0].detach().clone()) and None)
    try:  # the block's own outputs over the references: their mean over every position is the reference mean
        for batch in references:
            logits(model, batch)
    finally:
        handle.remove()
    assert torch.allclose(torch.cat([o.reshape(-1, o.shape[-1]) for o in outputs]).mean(0), means[site], atol=1e-6)
    seen = []
    with ablate(model, {site: [1]}, mode="mean", means=means):
        handle = module.register_forward_hook(lambda m, a, output: seen.append(output[0].detach().clone()) and None)
        try:  # registered after ablate's hook, so it sees the ablated output
            logits(model, inputs(8))
        finally:
            handle.remove()
    width = module.head_dim
    head = seen[0][..., width:2 * width]
    assert torch.equal(head, means[site][width:2 * width].expand_as(head))
    assert not torch.equal(seen[0][..., :width], means[site][:width].expand_as(head))  # other heads untouched


def test_bad_sites_and_heads_are_refused_by_name(model):
    with pytest.raises(InputError, match="unknown site"):
        with ablate(model, {"fusion.text.0.ffn": [0]}):
            pass
    with pytest.raises(InputError, match="out of range"):
        with ablate(model, {"fusion.text.0.cross_attention": [99]}):
            pass
    with pytest.raises(InputError, match="the fusion has"):
        with ablate(model, {"fusion.text.9.cross_attention": [0]}):
            pass
    with pytest.raises(InputError, match="positions='cls'"):
        with patch(model, record_states(model, inputs(1, ids=(1, 5, 2)))):
            logits(model, inputs(2))


def test_recovered_fraction():
    assert recovered_fraction(2.0, clean=3.0, corrupted=1.0) == 0.5
    assert math.isnan(recovered_fraction(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def shapes_model():
    from vle.processing_vle import VLEProcessor

    return VLEForVQA.from_pretrained("vle-tiny-shapes-vqa").eval(), VLEProcessor.from_pretrained("vle-tiny-shapes-vqa")


def shapes_inputs(processor, seed: int, question: str = "what color is the object nearest to the square ?"):
    return dict(processor(text=question, images=make_scene(seed).image))


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_ablation_sweep_equals_ablating_each_head_alone(shapes_model, mode):
    """The traced sweep (reruns from the ablated block, each site's heads as one batch) against full runs, for every
    attention head of every site of both streams, on the embedded model (whose heads matter)."""
    from vle.explain.interventions import record_heads
    from vle.explain.sweep import ablation_sweep

    model, processor = shapes_model
    batch = shapes_inputs(processor, 1_000_003)
    reference = {"zero": {}, "mean": {"means": head_means(model, [shapes_inputs(processor, 1_000_010)])},
                 "resample": {"source": record_heads(model, shapes_inputs(processor, 1_000_011))}}[mode]
    result = ablation_sweep(model, batch, mode=mode, **reference)
    sites = attention_sites(model)
    assert len(result["effects"]) == len(sites) * model.config.num_attention_heads
    assert result["probability"] == pytest.approx(float(logits(model, batch).softmax(-1).max()), abs=1e-6)
    for effect in result["effects"]:
        with ablate(model, {effect["site"]: [effect["head"]]}, mode=mode, **reference):
            alone = float(logits(model, batch).softmax(-1)[0, result["index"]])
        assert effect["probability"] == pytest.approx(alone, abs=1e-5), effect
        assert effect["delta"] == pytest.approx(alone - result["probability"], abs=1e-5)
    assert max(abs(effect["delta"]) for effect in result["effects"]) > 0.05


@pytest.mark.parametrize("layers", [2, 4])
def test_a_traced_rerun_equals_the_model(layers):
    """``FusionTrace.logits_with`` with a site's own output changed, against the hooked full run, on logits: every
    site, a few rows at a time, with and without the reuse of the unreached stream's self-attention (4 layers)."""
    from vle.explain.sweep import FusionTrace

    torch.manual_seed(layers)
    model = VLEForVQA(VLEConfig.tiny(num_hidden_layers=layers, id2label={0: "red", 1: "blue", 2: "circle"})).eval()
    batch = inputs(9)
    trace = FusionTrace(model, batch)
    trace.rows_per_rerun = 2  # 3 rows: a rerun of 2 and one of 1
    for site in attention_sites(model):
        changed = trace.attended[site] * torch.linspace(0.5, 1.5, trace.attended[site].shape[-1])

        def hook(_module, _args, output, changed=changed):
            return (changed.expand_as(output[0]) if output[0].shape == changed.shape else output[0], *output[1:])
        with hooked([(site_module(model, site)[0], hook)]), torch.no_grad():
            replaced = model(**batch, pooled_only=True).logits
        assert torch.allclose(trace.logits_with(site, changed.expand(3, -1, -1)), replaced.expand(3, -1),
                              atol=1e-6, rtol=1e-5), site


def test_a_head_without_a_trace_is_swept_by_full_runs():
    from vle import VLEForITM
    from vle.explain.sweep import FusionTrace, ablation_sweep

    torch.manual_seed(0)
    itm = VLEForITM(VLEConfig.tiny()).eval()
    batch = inputs(13)
    assert not FusionTrace.supports(itm, batch)
    result = ablation_sweep(itm, batch, sites=["fusion.image.1.self_attention"])
    effect = result["effects"][2]
    with ablate(itm, {effect["site"]: [2]}), torch.no_grad():
        alone = float(itm(**batch).logits.softmax(-1)[0, result["index"]])
    assert effect["probability"] == pytest.approx(alone, abs=1e-6)


def test_resampling_needs_the_same_lengths(model):
    from vle.explain.interventions import record_heads

    source = record_heads(model, inputs(1, ids=(1, 5, 2)))
    with pytest.raises(InputError, match="same lengths"):
        with ablate(model, {"fusion.text.0.self_attention": [0]}, mode="resample", source=source):
            logits(model, inputs(2))
    with pytest.raises(InputError, match="record_heads"):
        with ablate(model, {"fusion.text.0.self_attention": [0]}, mode="resample"):
            pass


def test_the_ablate_command_lists_every_head(capsys):
    import json
    from pathlib import Path

    from vle.cli import main

    scene = Path(__file__).resolve().parent.parent / "pics" / "shapes_0.png"
    assert main(["ablate", str(scene), "what size is the green object ?", "--sites", "cross", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["result"]
    assert set(printed) == {"answer", "probability", "effects"}
    assert all(set(e) == {"site", "head", "probability", "delta"} for e in printed["effects"])
    assert {e["site"].rsplit(".", 1)[1] for e in printed["effects"]} == {"cross_attention"}
    assert min(e["delta"] for e in printed["effects"]) < -0.1  # some head carries the answer
    with pytest.raises(SystemExit) as refused:  # a usage error: argparse names the choices
        main(["ablate", str(scene), "what size ?", "--sites", "ffn"])
    assert refused.value.code == 2 and "invalid choice: 'ffn'" in capsys.readouterr().err


def test_explanations_run_inside_interventions(shapes_model):
    """Every method explains a patched or ablated run; a target that no longer depends on the inputs (every layer
    patched) gets zero gradient relevance, or a refusal in words from integrated gradients."""
    from vle.explain import Session

    model, processor = shapes_model
    session = Session(model, processor)
    states = record_states(model, shapes_inputs(processor, 1_000_005))
    inputs = session.prepare(make_scene(1_000_006).image,
                             "what color is the object nearest to the square ?")
    for method in ("coattention_relevance", "rollout", "gradcam", "raw_attention", "integrated_gradients"):
        with patch(model, states, sites=["fusion.image.0.hidden"]):  # batch-1 states into Captum's batched steps
            assert session.explain(inputs, method=method).patch_scores.size == 64
        with ablate(model, {"fusion.text.1.cross_attention": "all"}):
            assert session.explain(inputs, method=method).patch_scores.size == 64
    with patch(model, states):
        assert not session.explain(inputs, method="coattention_relevance").patch_scores.any()
        with pytest.raises(InputError, match="nothing to attribute"):
            session.explain(inputs, method="integrated_gradients")


def test_a_sweep_inside_another_intervention_sees_it(model):
    """Under an outer ablation the sweep falls back to full runs, so every rerun keeps the outer intervention."""
    from vle.explain.sweep import FusionTrace, ablation_sweep

    batch, outer = inputs(14), {"fusion.image.0.cross_attention": [1]}
    with ablate(model, outer):
        assert not FusionTrace.supports(model, batch)
        effect = ablation_sweep(model, batch, answer=0, sites=["fusion.text.1.cross_attention"])["effects"][2]
        with ablate(model, {"fusion.text.1.cross_attention": [2]}):
            both = float(logits(model, batch).softmax(-1)[0, 0])
    assert effect["probability"] == pytest.approx(both, abs=1e-6)
