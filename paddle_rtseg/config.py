"""PaddleSeg YAML configs, checked before anything is built.

``load_config`` wraps ``paddleseg.cvlibs.Config`` (``_base_`` inheritance, ``--opts key=value``) and
turns the mistakes users make into one-paragraph errors: a missing file, a misspelled top-level key,
an unknown component ``type`` (with the closest registered names), and constructor arguments the
component does not take (listing the ones it does).
"""
import difflib
import inspect
import os

import paddle
from paddleseg.cvlibs import Config, SegBuilder, manager

TOP_LEVEL_KEYS = {
    "batch_size", "iters", "train_dataset", "val_dataset", "test_dataset", "model", "loss",
    "distill_loss", "optimizer", "lr_scheduler", "export", "test_config", "to_static_training",
    "_base_", "_inherited_",
}
_MANAGERS = [manager.MODELS, manager.BACKBONES, manager.DATASETS, manager.TRANSFORMS,
             manager.LOSSES, manager.OPTIMIZERS]


class ConfigError(ValueError):
    """A config file that cannot describe what PaddleSeg should build; the message says the fix."""


def _closest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return " Did you mean {}?".format(" or ".join(repr(c) for c in close)) if close else ""


def _component(type_name, where):
    for component_manager in _MANAGERS:
        if type_name in component_manager.components_dict:
            return component_manager.components_dict[type_name]
    known = [k for m in _MANAGERS for k in m.components_dict]
    raise ConfigError(
        "Unknown type {!r} at {}.{} Registered types from paddle_rtseg start with 'RTSeg_' "
        "(e.g. RTSeg_RTFormer); PaddleSeg's own types are also accepted. Fix `type:` in the "
        "config.".format(type_name, where, _closest(type_name, known)))


def _accepted_arguments(component):
    target = component.__init__ if inspect.isclass(component) else component
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None  # takes **kwargs: anything goes
    return [name for name in params if name not in ("self", "args")]


def check_component(cfg, where):
    """Recursively check ``type`` names and argument names of a component config dict."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        return
    component = _component(cfg["type"], where)
    accepted = _accepted_arguments(component)
    for key, value in cfg.items():
        if key == "type":
            continue
        if accepted is not None and key not in accepted:
            raise ConfigError(
                "{} ({}) takes no argument {!r}.{} It accepts: {}. Fix the key in the config or "
                "in --opts.".format(where, cfg["type"], key, _closest(key, accepted),
                                    ", ".join(accepted)))
        if isinstance(value, dict):
            check_component(value, "{}.{}".format(where, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                check_component(item, "{}.{}[{}]".format(where, key, i))


def load_config(path, learning_rate=None, batch_size=None, iters=None, opts=None):
    """Parse and check a PaddleSeg YAML config; returns ``paddleseg.cvlibs.Config``."""
    if not os.path.isfile(path):
        raise ConfigError("Config file {} does not exist. Pass --config with a YAML file, e.g. "
                          "configs/rtformer/rtformer_slim_synthetic_128x128_2k.yml".format(path))
    if not path.endswith((".yml", ".yaml")):
        raise ConfigError("Config file {} must be YAML (.yml or .yaml)".format(path))
    for item in opts or []:
        if item.count("=") != 1:
            raise ConfigError("--opts takes key=value pairs such as `model.num_classes=19 "
                              "batch_size=4`; got {!r}".format(item))
    raw = Config._parse_from_yaml(path)
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError("Unknown top-level key {!r} in {}.{} Valid keys: {}.".format(
                key, path, _closest(key, TOP_LEVEL_KEYS), ", ".join(sorted(TOP_LEVEL_KEYS))))
    try:
        cfg = Config(path, learning_rate=learning_rate, batch_size=batch_size, iters=iters,
                     opts=opts)
    except (AssertionError, RuntimeError, KeyError, TypeError) as e:  # PaddleSeg's own checks
        message = " ".join(str(e).split())
        raise ConfigError("Invalid config {}: {}".format(path, message)) from None
    for key in ("model", "train_dataset", "val_dataset", "optimizer"):
        check_component(cfg.dic.get(key), key)
    for i, item in enumerate((cfg.dic.get("loss") or {}).get("types", [])):
        check_component(item, "loss.types[{}]".format(i))
    lr_type = (cfg.dic.get("lr_scheduler") or {}).get("type")
    if lr_type is not None and not hasattr(paddle.optimizer.lr, lr_type):
        schedulers = [n for n in dir(paddle.optimizer.lr) if n[0].isupper() and n != "LRScheduler"]
        raise ConfigError("Unknown lr_scheduler type {!r}.{} Use a class of paddle.optimizer.lr: {}."
                          .format(lr_type, _closest(lr_type, schedulers), ", ".join(schedulers)))
    return cfg


def build_model(config_path, **model_overrides):
    """Build the model a PaddleSeg config describes; keyword arguments override ``model:`` keys,
    e.g. ``build_model(cfg, token_merging="hq", num_classes=19)``."""
    cfg = load_config(config_path)
    model_cfg = dict(cfg.dic.get("model", {}), **model_overrides)
    check_component(model_cfg, "model")
    cfg.dic["model"] = model_cfg
    builder = SegBuilder(cfg)
    try:
        if "num_classes" in model_cfg:  # explicit: no need to agree with the training dataset
            return builder.build_component(model_cfg)
        return builder.model
    except RuntimeError as e:  # PaddleSeg wraps the constructor's own error: show that one
        cause = e.__context__
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError("model: {}".format(cause)) from None
        raise
