import shutil

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


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (Playwright never downloads one here), without the network chatter it tries when nothing can
    be reached: for the browser tests of Voilà and JupyterLab."""
    from widgets.serve import CHROMIUM_ARGS

    return {**browser_type_launch_args, "executable_path": shutil.which("chromium"), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1300, "height": 2400}}
