"""PaddleSeg's own weight readers, routed through :mod:`paddle_rtseg.weights.safe_pickle`.

paddleseg 2.8 reads user files with ``paddle.load`` (``pickle.load``) in two places our models and
CLIs reach: ``utils.load_pretrained_model`` (every model's and backbone's ``pretrained``, also via
``load_entire_model``) and ``utils.resume`` (the trainer's ``--resume_model``). :func:`apply`
(called on ``import paddle_rtseg``) replaces both -- in ``paddleseg.utils.utils``, its re-export
``paddleseg.utils`` and the copy ``paddleseg.core.train`` imported -- with versions that read the
file safely (and PaddleSeg's config reader ``cvlibs.config.parse_from_yaml``, a ``yaml.FullLoader``,
with :func:`paddle_rtseg.config._read_yaml`); where PaddleSeg warned and went on with random weights, a ``pretrained`` that does not
load is an error (:func:`paddle_rtseg.weights.checkpoints.load_pretrained`). The replaced functions are kept
in :data:`ORIGINALS`. Not covered: the ViT and CAE backbones, which call ``paddle.load`` themselves.
"""
import importlib
import os
from urllib.parse import urlparse

ORIGINALS = {}


def load_pretrained_model(model, pretrained_model):
    """paddleseg's ``utils.load_pretrained_model``, reading through ``safe_pickle``, strict."""
    from paddleseg.utils import logger, utils

    from paddle_rtseg.weights.checkpoints import load_pretrained

    if pretrained_model is None:
        logger.info("No pretrained model to load, {} will be trained from scratch.".format(
            model.__class__.__name__))
        return
    logger.info("Loading pretrained model from {}".format(pretrained_model))
    if urlparse(pretrained_model).netloc:
        pretrained_model = utils.download_pretrained_model(pretrained_model)
    load_pretrained(model, pretrained_model)


def resume(model, optimizer, resume_model):
    """paddleseg's ``utils.resume``: both files are read through ``safe_pickle`` (as the Tensors
    ``paddle.load`` returns) before either is applied; returns the iteration."""
    from paddleseg.utils import logger

    from paddle_rtseg.weights.checkpoints import read_file
    from paddle_rtseg.weights.safe_pickle import load_paddle

    if resume_model is None:
        logger.info("No model needed to resume.")
        return None
    logger.info("Resume model from {}".format(resume_model))
    if not os.path.exists(resume_model):
        raise ValueError("Directory of the model needed to resume is not Found: {}".format(
            resume_model))
    resume_model = os.path.normpath(resume_model)
    params = read_file(os.path.join(resume_model, "model.pdparams"), load_paddle, False)
    opt_state = read_file(os.path.join(resume_model, "model.pdopt"), load_paddle, False)
    model.set_state_dict(params)
    optimizer.set_state_dict(opt_state)
    return int(resume_model.split("_")[-1])


def parse_from_yaml(path):
    """paddleseg's ``cvlibs.config.parse_from_yaml`` through our one safe YAML reader (it read the
    file with ``yaml.FullLoader``, which resolves ``!!python/name:`` tags)."""
    from paddle_rtseg.config import _read_yaml
    return _read_yaml(path)


def apply():
    """Install the safe readers wherever paddleseg 2.8 binds the originals (idempotent)."""
    if ORIGINALS:
        return
    import paddleseg.utils as package

    utils = importlib.import_module("paddleseg.utils.utils")
    train = importlib.import_module("paddleseg.core.train")
    for name, safe in (("load_pretrained_model", load_pretrained_model), ("resume", resume)):
        if not hasattr(utils, name):  # another paddleseg: nothing of the name to replace
            continue
        ORIGINALS[name] = getattr(utils, name)
        for module in (utils, package, train):
            if getattr(module, name, None) is ORIGINALS[name]:
                setattr(module, name, safe)
    config = importlib.import_module("paddleseg.cvlibs.config")
    if hasattr(config, "parse_from_yaml"):  # PaddleSeg's reader uses yaml.FullLoader
        ORIGINALS["parse_from_yaml"] = config.parse_from_yaml
        config.parse_from_yaml = parse_from_yaml
