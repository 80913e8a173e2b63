"""Interventions on the fusion (the groundwork of the "what if" explorer): an empty intervention changes nothing bit for
bit; patching every layer output from a source run reproduces the source's outputs; ablating the text stream's
cross-attention in every layer makes the text stream independent of the image; the model is restored after an
exception inside the block; mean ablation and recovered fractions."""

import math

import pytest
import torch

from vle import VLEConfig, VLEForVQA
from vle.errors import InputError
from vle.explain.interventions import (ablate, attention_sites, head_means, patch, record_states,
                                       recovered_fraction)


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


def test_ablation_sweep_equals_ablating_each_head_alone(model):
    from vle.explain.interventions import ablation_sweep

    batch = inputs(9)
    sites = attention_sites(model, "cross")[:2]
    result = ablation_sweep(model, batch, answer=1, sites=sites)
    assert len(result["effects"]) == 2 * model.config.num_attention_heads
    assert result["probability"] == pytest.approx(float(logits(model, batch).softmax(-1)[0, 1]), abs=1e-6)
    effect = result["effects"][3]
    with ablate(model, {effect["site"]: [effect["head"]]}):
        alone = float(logits(model, batch).softmax(-1)[0, 1])
    assert effect["probability"] == pytest.approx(alone, abs=1e-6)
    assert effect["delta"] == pytest.approx(alone - result["probability"], abs=1e-6)


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
