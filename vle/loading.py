"""Checkpoint plumbing shared by every VLE class: reading tensor shapes from a checkpoint without loading it,
position-embedding interpolation (spec §7), and turning loading info into clear errors and reports."""

from __future__ import annotations

import contextlib
import math
import os
import pickle

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from transformers.utils import cached_file, logging

from .errors import InputError

logger = logging.get_logger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
POSITION_KEY = "vision_model.vision_model.embeddings.position_embedding.weight"


class MissingHeadError(ValueError):
    """The checkpoint has no weights for the task head of the class it is loaded into."""


@contextlib.contextmanager
def readable_loading_errors(path: str, what: str = "model"):
    """Turn what a broken or unreachable checkpoint raises deep inside transformers, safetensors or torch into one
    ``InputError`` that names the folder and says what to do."""

    try:
        yield
    except InputError:
        raise
    except SafetensorError as error:
        raise InputError(f"cannot load the {what} from {path}: its model.safetensors is truncated or corrupt "
                         f"({error}); save or download it again") from None
    except (pickle.UnpicklingError, EOFError) as error:
        raise InputError(f"cannot load the {what} from {path}: its pytorch_model.bin is truncated or corrupt "
                         f"({error}); save or download it again") from None
    except RuntimeError as error:
        if "PytorchStreamReader" not in str(error) and "Weights only load failed" not in str(error):
            raise
        raise InputError(f"cannot load the {what} from {path}: its pytorch_model.bin is truncated or corrupt; save "
                         "or download it again") from None
    except (OSError, ValueError) as error:  # unreadable config or tokenizer files, a hub id that cannot be reached
        if str(path).startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(str(path))):
            raise InputError(f"cannot load the {what}: there is no folder {path}") from None
        raise InputError(f"cannot load the {what} from {path}: {error}") from None


def interpolate_position_embedding(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, D) → (1 + grid*grid, D): keep the class row, bicubic-resize the patch rows (align_corners=False)."""
    old_grid = int(math.isqrt(weight.shape[0] - 1))
    if old_grid * old_grid != weight.shape[0] - 1:
        raise ValueError(f"position embedding has {weight.shape[0]} rows, not 1 + a square number of patches")
    if old_grid == grid:
        return weight.clone()
    dim = weight.shape[1]
    patches = weight[1:].reshape(old_grid, old_grid, dim).permute(2, 0, 1)[None].float()  # (1, D, g, g)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches[0].permute(1, 2, 0).reshape(grid * grid, dim).to(weight.dtype)
    return torch.cat([weight[:1], patches], dim=0)


def extend_position_embedding(state_dict: dict, patch_size: int, after: int) -> dict:
    """Interpolate a state dict's CLIP position embedding to image size ``after`` (spec §7); returns a new dict.
    Works with or without the old ``position_ids`` buffer."""
    keys = [k for k in state_dict if k.endswith("vision_model.embeddings.position_embedding.weight")]
    if len(keys) != 1:
        raise ValueError(f"expected one CLIP position embedding in the state dict, found {len(keys)}")
    grid = after // patch_size
    out = dict(state_dict)
    out[keys[0]] = interpolate_position_embedding(state_dict[keys[0]], grid)
    for key in [k for k in state_dict if k.endswith("vision_model.embeddings.position_ids")]:
        out[key] = torch.arange(grid * grid + 1)[None]
    return out


def _weight_file(path: str, hub_kwargs: dict) -> str | None:
    for name in WEIGHT_FILES:
        try:
            found = cached_file(path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        except OSError:
            found = None
        if found:
            return found
    return None


def checkpoint_keys(path: str, hub_kwargs: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor's key and shape in a checkpoint, read lazily (safetensors header or mmap); {} without weights."""
    weight_file = _weight_file(path, hub_kwargs or {})
    if weight_file is None:
        return {}
    if weight_file.endswith(".safetensors"):

        with safe_open(weight_file, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    state = torch.load(weight_file, map_location="cpu", mmap=True, weights_only=True)
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def checkpoint_shape(path: str, key_suffix: str, hub_kwargs: dict | None = None) -> tuple[int, ...] | None:
    """The shape of the tensor whose key ends with ``key_suffix``, or None."""
    return next((shape for key, shape in checkpoint_keys(path, hub_kwargs).items() if key.endswith(key_suffix)), None)


def align_config_with_checkpoint(config, path: str, hub_kwargs: dict) -> None:
    """The weights are authoritative: when the checkpoint's position table implies another image size than
    ``config.vision_config.image_size`` (released configs were not always edited), follow the checkpoint."""
    shape = checkpoint_shape(path, POSITION_KEY, hub_kwargs)
    if shape is None:
        return
    grid = math.isqrt(shape[0] - 1)
    image_size = grid * config.vision_config.patch_size
    if image_size != config.vision_config.image_size:
        logger.warning(f"{path}: config says image_size {config.vision_config.image_size} but the position embedding "
                       f"has {shape[0]} rows; using image_size {image_size}")
        config.vision_config.image_size = image_size


def check_loading_info(model, info: dict, path: str, init_new_head: bool, known_prefixes=()) -> None:
    """No silent drops: missing encoder weights are an error, a missing head is an error naming it (unless a new
    head is wanted), extra keys are reported. ``known_prefixes``: every registered head's parameter prefixes."""
    known_prefixes = set(known_prefixes)
    missing = sorted(info.get("missing_keys") or ())
    mismatched = info.get("mismatched_keys") or ()
    if mismatched:
        raise ValueError(f"{path}: weights of the wrong shape for {type(model).__name__}: {list(mismatched)[:5]}")
    head_prefixes = tuple(getattr(model, "head_prefixes", ()))
    missing_head = [k for k in missing if k.startswith(head_prefixes)] if head_prefixes else []
    missing_encoder = [k for k in missing if k not in missing_head]
    if missing_encoder:
        raise ValueError(f"{path}: the checkpoint lacks {len(missing_encoder)} encoder weights, e.g. "
                         f"{missing_encoder[:5]}; is it a VLE checkpoint?")
    if missing_head and not init_new_head:
        present = heads_in(path, known_prefixes)
        raise MissingHeadError(
            f"{path} has no weights for the {type(model).__name__} head ({', '.join(p + '.*' for p in head_prefixes)}); "
            f"it holds heads: {', '.join(present) or 'none'}. Load a class for one of those, or pass "
            f"init_new_head=True to start a new head for fine-tuning.")
    if missing_head:
        logger.warning(f"{path}: new {type(model).__name__} head initialised: {missing_head}")
    unexpected = sorted(info.get("unexpected_keys") or ())
    other_heads = sorted({k.split(".")[0] for k in unexpected if k.split(".")[0] in known_prefixes})
    if other_heads:
        logger.info(f"{path}: heads not used by {type(model).__name__}: {', '.join(other_heads)}")
    unexpected = [k for k in unexpected if k.split(".")[0] not in known_prefixes]
    if unexpected:
        logger.warning(f"{path}: {len(unexpected)} checkpoint keys unused by {type(model).__name__}: "
                       f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")


def heads_in(path: str, known_prefixes) -> list[str]:
    """The head prefixes among ``known_prefixes`` that a checkpoint holds weights for."""
    keys = checkpoint_keys(path)
    return sorted(p for p in known_prefixes if any(key.startswith(p + ".") for key in keys))
