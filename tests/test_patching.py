"""Exact and attribution patching: the first-order estimate equals the exact effect for a small change of the input,
ranks the sites as exact patching does for a real counterfactual (a recoloured object), and leaves the model as it
was; pairs that cannot be compared are refused in words."""

import numpy as np
import pytest
import torch

from vle.errors import InputError
from vle.explain.patching import agreement, attribution_patching, exact_patching
from vle.modeling_vle import VLEForVQA
from vle.processing_vle import VLEProcessor
from vle.shapes.counterfactual import recolor_object
from vle.shapes.world import make_scene


@pytest.fixture(scope="module")
def shapes_model():
    return VLEForVQA.from_pretrained("vle-tiny-shapes-vqa").eval(), VLEProcessor.from_pretrained("vle-tiny-shapes-vqa")


def recoloured_pair(processor, seed: int = 1_000_005):
    scene = make_scene(seed)
    first = scene.objects[0]
    free = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange")
                if c not in {o.color for o in scene.objects})
    question = f"what color is the {first.size} {first.shape} ?"
    return (dict(processor(text=question, images=scene.image)),
            dict(processor(text=question, images=recolor_object(scene, 0, free).image)))


def test_the_estimate_is_exact_to_first_order(shapes_model):
    model, processor = shapes_model
    clean, _ = recoloured_pair(processor)
    corrupted = dict(clean, pixel_values=clean["pixel_values"] + 0.01 * torch.randn(
        clean["pixel_values"].shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        answer, foil = model(**clean).logits[0].topk(2).indices.tolist()  # the same answer: the foil is given
    estimate = attribution_patching(model, clean, corrupted, answer, foil)
    exact = exact_patching(model, clean, corrupted, answer, foil)
    truth = {(e["site"], e["head"]): e["effect"] for e in exact["effects"]}
    assert len(truth) == len(estimate["effects"]) == 36  # 32 attention heads and 4 layer outputs
    assert estimate["clean"] == pytest.approx(exact["clean"], abs=1e-4)
    assert estimate["corrupted"] == pytest.approx(exact["corrupted"], abs=1e-4)
    scale = max(abs(v) for v in truth.values())
    assert scale > 1e-3
    for effect in estimate["effects"]:
        assert effect["effect"] == pytest.approx(truth[effect["site"], effect["head"]], abs=0.05 * scale), effect


def test_attribution_patching_ranks_sites_as_exact_patching_does(shapes_model):
    model, processor = shapes_model
    clean, corrupted = recoloured_pair(processor)
    estimate, exact = attribution_patching(model, clean, corrupted), exact_patching(model, clean, corrupted)
    assert estimate["answer"] == exact["answer"] != exact["foil"] == estimate["foil"]
    assert agreement(estimate, exact) > 0.8
    # the layer outputs hold every path: patching the text stream's last state restores (almost) all of it
    last = next(e for e in exact["effects"] if e["site"] == "fusion.text.1.hidden")
    assert last["recovered"] > 0.9
    recovered = [e["recovered"] for e in exact["effects"]]
    assert np.isfinite(recovered).all()


def test_patching_leaves_the_model_as_it_was(shapes_model):
    model, processor = shapes_model
    clean, corrupted = recoloured_pair(processor)
    with torch.no_grad():
        before = model(**clean).logits
    attribution_patching(model, clean, corrupted)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())
    with torch.no_grad():
        assert torch.equal(model(**clean).logits, before)


def test_pairs_that_cannot_be_compared_are_refused(shapes_model):
    model, processor = shapes_model
    clean, _ = recoloured_pair(processor)
    longer = dict(processor(text="what color is the large square on the left ?", images=make_scene(1_000_005).image))
    with pytest.raises(InputError, match="same lengths"):
        attribution_patching(model, clean, longer)
    with pytest.raises(InputError, match="give the foil"):
        exact_patching(model, clean, clean)


def test_traced_and_full_runs_patch_alike(monkeypatch):
    """Exact patching from a trace (a site's heads rerun from their block) equals patching by full runs."""
    from vle import VLEConfig
    from vle.explain.sweep import FusionTrace

    torch.manual_seed(0)
    model = VLEForVQA(VLEConfig.tiny(num_hidden_layers=3, id2label={0: "a", 1: "b", 2: "c"})).eval()
    generator, ids = torch.Generator().manual_seed(1), torch.tensor([[1, 5, 6, 7, 2]])
    clean, corrupted = (dict(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32, generator=generator))
                        for _ in range(2))
    traced = exact_patching(model, clean, corrupted, answer=0, foil=1)
    monkeypatch.setattr(FusionTrace, "supports", staticmethod(lambda model, inputs: False))
    full = exact_patching(model, clean, corrupted, answer=0, foil=1)
    assert [(e["site"], e["head"]) for e in traced["effects"]] == [(e["site"], e["head"]) for e in full["effects"]]
    assert np.allclose([e["effect"] for e in traced["effects"]], [e["effect"] for e in full["effects"]], atol=1e-5)
