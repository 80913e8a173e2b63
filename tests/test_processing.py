"""VLEProcessor and image reading: modes, bad files, empty and over-long texts, save/load in the hfl layout."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from vle.image_utils import load_image
from vle.processing_vle import VLEProcessor
from vle.testing import tiny_tokenizer_dir


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "F"])
def test_image_modes_are_converted(mode):
    image = Image.new("RGB", (20, 10), (200, 50, 20)).convert(mode) if mode != "I;16" else Image.new("I;16", (20, 10), 4000)
    converted = load_image(image)
    assert converted.mode == "RGB" and converted.size == (20, 10)


def test_paths_arrays_and_channels_first(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (7, 5), "red").save(path)
    assert load_image(str(path)).size == (7, 5)
    assert load_image(np.zeros((3, 5, 7), np.float32)).size == (7, 5)
    assert load_image(np.ones((5, 7, 4), np.uint8)).mode == "RGB"


def test_bad_images_get_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        load_image(str(corrupt))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="zero size"):
        load_image(Image.new("RGB", (0, 3)))
    with pytest.raises(TypeError, match="path, bytes, PIL image, numpy array or torch tensor"):
        load_image(42)


def test_processor_outputs(processor, image):
    batch = processor(text=["a red circle", "what color is the small square left of the blue circle"],
                      images=[image, image])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["input_ids"][0, 0] == processor.tokenizer.cls_token_id


def test_empty_text_and_overlong_text(processor, image):
    with pytest.raises(ValueError, match="text is empty"):
        processor(text="   ", images=image)
    with pytest.warns(UserWarning, match="truncated"):
        batch = processor(text="red " * 700, images=image)
    assert batch["input_ids"].shape[1] == processor.max_text_length


def test_text_image_count_mismatch(processor, image):
    with pytest.raises(ValueError, match="3 texts but 2 images"):
        processor(text=["a", "b", "c"], images=[image, image])


def test_save_load_round_trip(tmp_path, processor, image):
    processor.save_pretrained(tmp_path)
    again = VLEProcessor.from_pretrained(tmp_path)
    a, b = processor(text="a red circle", images=image), again(text="a red circle", images=image)
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    np.testing.assert_allclose(a["pixel_values"].numpy(), b["pixel_values"].numpy())


def test_loads_the_hfl_file_layout(tmp_path, processor, image):
    """preprocessor_config.json + spm.model + tokenizer_config.json, as in the hfl/vle-* repositories."""
    shutil.copy(f"{tiny_tokenizer_dir()}/spm.model", tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
        "do_rescale": True, "rescale_factor": 1 / 255, "feature_extractor_type": "CLIPFeatureExtractor",
        "image_processor_type": "CLIPImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "VLEProcessor", "resample": 3,
        "size": {"shortest_edge": 32}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "[CLS]", "cls_token": "[CLS]", "do_lower_case": False, "eos_token": "[SEP]",
        "mask_token": "[MASK]", "model_max_length": 1e30, "pad_token": "[PAD]", "processor_class": "VLEProcessor",
        "sep_token": "[SEP]", "sp_model_kwargs": {}, "split_by_punct": False, "tokenizer_class": "DebertaV2Tokenizer",
        "unk_token": "[UNK]", "vocab_type": "spm"}))
    loaded = VLEProcessor.from_pretrained(tmp_path)
    assert loaded.image_size == 32 and loaded.max_text_length == 512
    assert loaded(text="a red circle", images=image)["input_ids"].tolist() == \
        processor(text="a red circle", images=image)["input_ids"].tolist()
