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


@pytest.fixture(autouse=True, scope="session")
def _runs_in_a_temporary_folder(tmp_path_factory):
    """The Dataset tab's default run goes to a temporary folder, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLE_WORKBENCH_RUNS", str(tmp_path_factory.mktemp("runs")))
    yield
    mp.undo()
