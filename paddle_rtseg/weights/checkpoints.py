"""Load PaddleSeg ``.pdparams`` and authors' PyTorch ``.pth`` checkpoints into our models.

Every file is read by :mod:`paddle_rtseg.weights.safe_pickle` (never ``pickle.load``/``paddle.load``), so a
checkpoint cannot run code. The format is detected from the file's content (PyTorch zip archive or
legacy magic number; anything else is a ``paddle.save`` pickle). PyTorch state dicts
are translated by the model's own ``convert_torch_state_dict`` (one key-mapping filter per model
family, as timm does). Before anything is loaded, the checkpoint is compared with the model and every
missing, unexpected or shape-mismatched parameter is reported by name, so nothing loads half-way.
"""
import os
import struct
import zipfile

import numpy as np

from paddle_rtseg_runtime.limits import LimitError
from paddle_rtseg.weights.safe_pickle import UnsafeCheckpointError, load_paddle
from paddle_rtseg.weights.torch_reader import is_torch_file, load_torch_state_dict


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; the message lists the offending keys."""


def _reason(error):
    """Why reading failed, in words, never empty (``EOFError()`` and ``MemoryError()`` have no
    message) and never long (a ``KeyError`` quotes its key)."""
    if isinstance(error, EOFError):
        return "the file ends in the middle of its data (it is truncated)"
    if isinstance(error, MemoryError):
        return "it declares more data than this machine can hold (the file is corrupt or crafted)"
    if isinstance(error, RecursionError):
        return "its data is nested too deeply for a checkpoint (the file is corrupt or crafted)"
    if isinstance(error, zipfile.BadZipFile):
        return "its zip archive is damaged ({})".format(" ".join(str(error).split())[:200])
    text = " ".join(str(error).split())
    if isinstance(error, (KeyError, IndexError, TypeError, AttributeError, struct.error)) or not text:
        text = "{}{}".format(type(error).__name__, ": " + text if text else "")
    return text if len(text) <= 300 else text[:300] + "..."


def read_file(path, read, *args):
    """``read(path, *args)``; a corrupt or foreign file raises ``ValueError`` saying so and why
    (not where reading failed); :class:`UnsafeCheckpointError`, the named limits
    (:class:`~paddle_rtseg_runtime.limits.LimitError`) and ``FileNotFoundError`` pass unchanged."""
    try:
        return read(path, *args)
    except (UnsafeCheckpointError, LimitError, FileNotFoundError):
        raise
    except OSError as e:  # unreadable (permissions, a folder, an I/O error): say so
        raise ValueError("Cannot read checkpoint {}: {}. Check the file and its permissions."
                         .format(path, e.strerror or _reason(e))) from None
    except Exception as e:
        raise ValueError("Cannot read checkpoint {}: {}. Expected a PaddleSeg .pdparams/.pdopt "
                         "(paddle.save) or a PyTorch .pth (torch.save).".format(
                             path, _reason(e))) from None


def read_checkpoint(path, model=None):
    """``{name: numpy array}`` in our naming, from a ``.pdparams`` or a PyTorch ``.pth``."""
    if not os.path.isfile(path):
        from paddle_rtseg_runtime.files import not_a_file
        raise FileNotFoundError("Checkpoint {} {} (pass the path of a .pdparams or "
                                ".pth file)".format(path, not_a_file(path)))
    torch_format = read_file(path, is_torch_file)  # reads the header: an I/O error is a paragraph
    state = read_file(path, load_torch_state_dict if torch_format else load_paddle)
    if torch_format:
        convert = getattr(model, "convert_torch_state_dict", None)
        if convert is None:
            raise ValueError("{} is a PyTorch checkpoint, but {} has no converter for PyTorch "
                             "weights; load a PaddleSeg .pdparams instead".format(
                                 path, type(model).__name__))
        return convert(state)
    if not isinstance(state, dict):
        raise ValueError("{} holds a {}, not a state dict".format(path, type(state).__name__))
    state = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
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


_ADVICE = ("Check that the config describes the same model variant as the checkpoint; pass "
           "strict=False to load only the matching parameters.")


def _describe(path, model, missing, unexpected, mismatched, limit=20, advice=_ADVICE):
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
    lines.append("  " + advice)
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


def check_resume_fits(model, resume_dir):
    """Refuse ``--resume_model`` whose ``model.pdparams`` does not fit ``model`` (e.g. another
    num_classes), listing the keys as :func:`load_checkpoint` does. PaddleSeg's resume would skip
    the mismatched parameters with a warning and train on."""
    path = os.path.join(resume_dir, "model.pdparams")
    missing, unexpected, mismatched = compare_state_dicts(model.state_dict(),
                                                          read_checkpoint(path, model))
    # the optimizer state too, through the same safe reader (PaddleSeg reads it when training
    # starts): a refused file is refused before any other judgement of the run
    read_file(os.path.join(resume_dir, "model.pdopt"), load_paddle)
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(_describe(
            path, model, missing, unexpected, mismatched,
            advice="--resume_model continues the run that wrote it: resume with that run's "
                   "config, or start a new run (without --resume_model)."))


def load_pretrained(model, path):
    """Load the ``pretrained`` checkpoint of a model or backbone; ``None`` loads nothing.

    Unlike PaddleSeg's ``load_pretrained_model`` (which logs a warning per key and trains on from
    random weights), a file that does not load is an error: missing file, unsafe pickle, a parameter
    of another shape, or a checkpoint sharing no parameter with the model (another model:
    :class:`CheckpointMismatchError`, model untouched). Parameters the checkpoint lacks are expected
    when it is a backbone's (PaddleSeg's RTFormer ``pretrained`` is an ImageNet backbone loaded into
    the whole segmentor, without the heads): they keep their initialisation and are listed in one
    line, by module. Extra checkpoint entries (an ImageNet classifier) are ignored.
    """
    if path is None:
        return None
    state = read_checkpoint(path, model)
    model_state = model.state_dict()
    missing, unexpected, mismatched = compare_state_dicts(model_state, state)
    if mismatched or len(missing) == len(model_state):
        raise CheckpointMismatchError(_describe(
            path, model, missing if not mismatched else [], [], mismatched,
            advice="Check that `pretrained` is a checkpoint of this model or its backbone (or set "
                   "pretrained: null)."))
    model.set_state_dict({k: v.astype(_numpy_dtype(model_state[k]), copy=False)
                          for k, v in state.items() if k in model_state})
    from paddleseg.utils import logger
    logger.info("Loaded {} of {} parameters of {} from {} ({} extra entries ignored)".format(
        len(model_state) - len(missing), len(model_state), type(model).__name__, path,
        len(unexpected)))
    if missing:
        modules = sorted({k.rsplit(".", 2)[0] if k.count(".") > 1 else k.split(".")[0]
                          for k in missing})
        logger.warning("Not in {}, kept at initialisation ({} parameters): {}".format(
            path, len(missing), ", ".join(modules[:20]) + (" ..." if len(modules) > 20 else "")))
    return dict(missing=missing, unexpected=unexpected, mismatched=mismatched)
