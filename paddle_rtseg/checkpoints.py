"""Load PaddleSeg ``.pdparams`` and authors' PyTorch ``.pth`` checkpoints into our models.

The format is detected from the file's content (PyTorch files are zip archives). PyTorch state dicts
are translated by the model's own ``convert_torch_state_dict`` (one key-mapping filter per model
family, as timm does). Before anything is loaded, the checkpoint is compared with the model and every
missing, unexpected or shape-mismatched parameter is reported by name, so nothing loads half-way.
"""
import os
import zipfile

import numpy as np
import paddle

from .torch_reader import load_torch_state_dict


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; the message lists the offending keys."""


def read_checkpoint(path, model=None):
    """``{name: numpy array}`` in our naming, from a ``.pdparams`` or a PyTorch ``.pth``."""
    if not os.path.isfile(path):
        raise FileNotFoundError("Checkpoint {} does not exist (pass the path of a .pdparams or "
                                ".pth file)".format(path))
    if zipfile.is_zipfile(path):
        state = load_torch_state_dict(path)
        convert = getattr(model, "convert_torch_state_dict", None)
        if convert is None:
            raise ValueError("{} is a PyTorch checkpoint, but {} has no converter for PyTorch "
                             "weights; load a PaddleSeg .pdparams instead".format(
                                 path, type(model).__name__))
        return convert(state)
    try:
        state = paddle.load(path, return_numpy=True)
    except Exception as e:  # a corrupt or foreign file: say which, not where Paddle failed
        raise ValueError("Cannot read checkpoint {}: {}. Expected a PaddleSeg .pdparams (paddle.save) "
                         "or a PyTorch .pth (torch.save).".format(path, e)) from None
    if not isinstance(state, dict):
        raise ValueError("{} holds a {}, not a state dict".format(path, type(state).__name__))
    state = {k: np.asarray(v) for k, v in state.items()}
    convert = getattr(model, "convert_paddle_state_dict", None)  # e.g. drop a classifier's keys
    return convert(state) if convert is not None else state


def compare_state_dicts(model_state, checkpoint_state):
    """(missing, unexpected, mismatched) key lists; mismatched entries carry both shapes."""
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    mismatched = [(k, list(checkpoint_state[k].shape), list(model_state[k].shape))
                  for k in model_state
                  if k in checkpoint_state
                  and list(checkpoint_state[k].shape) != list(model_state[k].shape)]
    return missing, unexpected, mismatched


def _describe(path, model, missing, unexpected, mismatched, limit=20):
    lines = ["Checkpoint {} does not fit {}:".format(path, type(model).__name__)]
    if mismatched:
        lines.append("  shape mismatch ({}): ".format(len(mismatched)) + ", ".join(
            "{} checkpoint {} vs model {}".format(k, a, b) for k, a, b in mismatched[:limit]))
        if any(k.endswith(("conv2.weight", "conv2.bias", "linear_pred.weight", "conv_seg.weight",
                           "cls_seg.weight")) for k, _, _ in mismatched):
            lines.append("  The classifier differs: the checkpoint was trained for another "
                         "num_classes. Set model.num_classes to match, or load it as a backbone.")
    if missing:
        lines.append("  missing in checkpoint ({}): {}".format(len(missing), ", ".join(missing[:limit])))
    if unexpected:
        lines.append("  unexpected in checkpoint ({}): {}".format(
            len(unexpected), ", ".join(unexpected[:limit])))
    lines.append("  Check that the config describes the same model variant as the checkpoint; "
                 "pass strict=False to load only the matching parameters.")
    return "\n".join(lines)


def _numpy_dtype(tensor):
    return np.dtype(str(tensor.dtype).replace("paddle.", ""))


def load_checkpoint(model, path, strict=True):
    """Load ``path`` (PaddleSeg ``.pdparams`` or authors' PyTorch ``.pth``) into ``model``.

    With ``strict`` (default) any missing, unexpected or mismatched key raises
    :class:`CheckpointMismatchError` naming them, and the model is left untouched. With
    ``strict=False`` the matching parameters are loaded and the report is returned.
    Returns ``dict(missing=[...], unexpected=[...], mismatched=[...])``.
    """
    state = read_checkpoint(path, model)
    model_state = model.state_dict()
    missing, unexpected, mismatched = compare_state_dicts(model_state, state)
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(_describe(path, model, missing, unexpected, mismatched))
    skip = {k for k, _, _ in mismatched}
    model.set_state_dict({k: v.astype(_numpy_dtype(model_state[k]), copy=False)
                          for k, v in state.items() if k in model_state and k not in skip})
    return dict(missing=missing, unexpected=unexpected, mismatched=mismatched)
