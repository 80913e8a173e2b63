"""Heads are declared once: a toy head registered in a test gets loading (and clear errors about missing heads), a
pipeline and explanation targets from its one class and one registration."""

import numpy as np
import pytest
from torch import nn

from vle import HEADS, MissingHeadError, VLEForVQA, VLEHeadModel, VLEHeadOutput, VLEPreTrainedModel, register_head
from vle.explain import Session, VQAAnswer
from vle.pipelines import pipeline, pipeline_tasks
from vle.testing import save_tiny_model

ANSWERS = {0: "yes", 1: "no"}


class ToyAnswers(VLEHeadModel):
    """A second answer classifier: one linear layer over the pooled pair."""

    task, head_prefixes, explains = "toy_answers", ("toy_classifier",), ("vqa",)

    def __init__(self, config):
        super().__init__(config)
        self.toy_classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, **kwargs):
        out = self._encode(kwargs)
        return VLEHeadOutput(logits=self.toy_classifier(out.pooler_output), vle_output=out)


@pytest.fixture
def toy_head():
    register_head(ToyAnswers)
    yield ToyAnswers
    HEADS.pop(ToyAnswers.task)
    VLEPreTrainedModel._keys_to_ignore_on_load_unexpected.remove(r"^toy_classifier\.")


def test_a_registered_head_gets_loading_a_pipeline_and_explanations(toy_head, tmp_path):
    save_tiny_model(toy_head, str(tmp_path / "toy"), id2label=ANSWERS)
    assert "toy_answers" in pipeline_tasks()
    pipe = pipeline("toy_answers", str(tmp_path / "toy"))
    answers = pipe(image=np.zeros((32, 32, 3), np.uint8), question="is it red ?", top_k=2)
    assert isinstance(pipe.model, toy_head) and {a["answer"] for a in answers} == {"yes", "no"}
    explanation = Session(pipe.model, pipe.processor).explain(np.zeros((32, 32, 3), np.uint8), "is it red ?",
                                                                target=VQAAnswer(1, "no"), method="rollout")
    assert explanation.patch_scores.shape == (4, 4) and explanation.target.label == 'answer "no"'


def test_the_loader_names_registered_heads_a_checkpoint_holds(toy_head, tmp_path):
    save_tiny_model(toy_head, str(tmp_path / "toy"), id2label=ANSWERS)
    with pytest.raises(MissingHeadError, match=r"it holds heads: toy_classifier"):
        VLEForVQA.from_pretrained(str(tmp_path / "toy"))
    save_tiny_model(VLEForVQA, str(tmp_path / "vqa"), id2label=ANSWERS)
    with pytest.raises(MissingHeadError, match=r"no weights for the ToyAnswers head \(toy_classifier\.\*\); it holds "
                                               r"heads: vqa_classifier"):
        toy_head.from_pretrained(str(tmp_path / "vqa"))


def test_every_shipped_head_is_declared_once():
    assert set(HEADS) == {"pretraining", "vqa", "itm", "pbc", "mlm", "mpc", "vcr_q2a", "vcr_qa2r"}
    assert set(pipeline_tasks()) == {"vqa", "itm", "pbc", "vcr_q2a", "vcr_qa2r", "classify"}
    prefixes = [p for cls in HEADS.values() if cls.task != "pretraining" for p in cls.head_prefixes]
    assert len(prefixes) == len(set(prefixes)) and set(HEADS["pretraining"].head_prefixes) <= set(prefixes)
    ignored = VLEPreTrainedModel._keys_to_ignore_on_load_unexpected
    assert all(rf"^{p}\." in ignored for p in prefixes)
