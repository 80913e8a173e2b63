import numpy as np
import pytest
import torch

from vle import VLEConfig
from vle.testing import tiny_processor


@pytest.fixture
def config():
    return VLEConfig.tiny(id2label={0: "red", 1: "blue", 2: "circle"}, num_token_types=8)


@pytest.fixture(scope="session")
def processor():
    return tiny_processor()


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (rng.random((40, 56, 3)) * 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
