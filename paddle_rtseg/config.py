"""PaddleSeg YAML configs, checked before anything is built.

``load_config`` wraps ``paddleseg.cvlibs.Config`` (``_base_`` inheritance, ``--opts key=value``) and
turns the mistakes users make into one-paragraph errors: a missing file, YAML syntax errors (file,
line, column), a misspelled top-level key, an unknown component ``type`` (with the closest registered
names), constructor arguments the component does not take (listing the ones it does), values of the
wrong type (text where a number is expected), and ``iters`` / ``batch_size`` / ``num_classes`` below 1.
``--opts`` values are read as YAML scalars, as in a config file (``null``, ``true``, ``1.0e-4``).
"""
import ast
import difflib
import inspect
import os

import paddle
from paddleseg.cvlibs import Config, SegBuilder, manager
from paddleseg.cvlibs.config import merge_config_dicts

from paddle_rtseg_runtime import limits
from paddle_rtseg.weights.safe_pickle import short_repr
from paddle_rtseg_runtime.files import not_a_file

TOP_LEVEL_KEYS = {
    "batch_size", "iters", "train_dataset", "val_dataset", "test_dataset", "model", "loss",
    "distill_loss", "optimizer", "lr_scheduler", "export", "test_config", "to_static_training",
    "_base_", "_inherited_",
}
#: How many files a chain of ``_base_`` may pass through.
MAX_BASE_DEPTH = 32
_MANAGERS = [manager.MODELS, manager.BACKBONES, manager.DATASETS, manager.TRANSFORMS,
             manager.LOSSES, manager.OPTIMIZERS]


class ConfigError(ValueError):
    """A config file that cannot describe what PaddleSeg should build; the message says the fix."""


def _closest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return " Did you mean {}?".format(" or ".join(repr(c) for c in close)) if close else ""


def _component(type_name, where):
    if not isinstance(type_name, str):
        raise ConfigError("`type:` at {} must be a name such as RTSeg_RTFormer, got {}. Fix `type:` "
                          "in the config.".format(where, _describe_value(type_name)))
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


def _parameters(target):
    target = target.__init__ if inspect.isclass(target) else target
    return inspect.signature(target).parameters


def _check_type(where, value, default):
    """Text where the component's default is a number or a flag (``base_channels: abc``)."""
    if not isinstance(value, str) or isinstance(default, str) or \
            not isinstance(default, (bool, int, float)):
        return
    kind = "true or false" if isinstance(default, bool) else "a number"
    hint = ""
    try:
        float(value)
        hint = " YAML reads a number with an exponent but no dot as text: write 1.0e-5, not 1e-5."
    except ValueError:
        pass
    raise ConfigError("{} must be {}, got {!r} (text).{} Fix it in the config or in --opts."
                      .format(where, kind, value, hint))


def check_component(cfg, where):
    """Recursively check ``type`` names and argument names of a component config dict."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        return
    component = _component(cfg["type"], where)
    accepted = _accepted_arguments(component)
    parameters = _parameters(component)
    for key, value in cfg.items():
        if key == "type":
            continue
        if accepted is not None and key not in accepted:
            raise ConfigError(
                "{} ({}) takes no argument {!r}.{} It accepts: {}. Fix the key in the config or "
                "in --opts.".format(where, cfg["type"], key, _closest(key, accepted),
                                    ", ".join(accepted)))
        if key in parameters:
            _check_type("{}.{}".format(where, key), value, parameters[key].default)
        if isinstance(value, dict):
            check_component(value, "{}.{}".format(where, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                check_component(item, "{}.{}[{}]".format(where, key, i))


def _read_yaml(path, named_by=None, chain=()):
    """PaddleSeg's ``parse_from_yaml`` (``_base_`` files merged under the file's own keys) through
    the one safe, bounded YAML reader (:func:`paddle_rtseg_runtime.limits.read_yaml`: no Python
    tags, size, nesting and alias expansion bounded); syntax errors, missing base files and
    ``_base_`` cycles are reported as :class:`ConfigError`. ``chain``: the files naming this one."""
    if not os.path.isfile(path):
        if named_by is None:
            raise ConfigError("Config file {} {}.".format(path, not_a_file(path)))
        raise ConfigError("Config file {} (the _base_ of {}) {}. Fix the _base_ path; it is "
                          "relative to the file that names it.".format(path, named_by,
                                                                        not_a_file(path)))
    real = os.path.realpath(path)
    seen = [r for r, _ in chain]
    chain = chain + ((real, os.path.normpath(path)),)
    if real in seen:
        cycle = [shown for _, shown in chain[seen.index(real):]]
        raise ConfigError("The _base_ files of {} form a cycle: {}. A config cannot inherit from "
                          "itself; remove the _base_ that points back.".format(
                              chain[0][1], " -> ".join(cycle)))
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError("{} inherits through more than {} _base_ files; shorten the chain."
                          .format(chain[0][1], MAX_BASE_DEPTH))
    try:
        dic = limits.read_yaml(path)
    except limits.YamlError as e:
        raise ConfigError(str(e)) from None
    if dic is None:
        dic = {}
    if not isinstance(dic, dict):
        raise ConfigError("Config file {} must be a YAML mapping of keys (model:, train_dataset:, "
                          "...), not a {}.".format(path, type(dic).__name__))
    bases = dic.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("_base_ in {} must be a file name or a list of file names, got {}."
                          .format(path, _describe_value(bases)[:200]))
    for base in bases:
        dic = merge_config_dicts(dic, _read_yaml(os.path.join(os.path.dirname(path), base), path,
                                                 chain))
    return dic


def _opt_value(item):
    """The value of ``--opts key=value`` read as YAML, as in a config file (``null`` is None,
    ``[1, 2]`` a list); what YAML leaves as text is then read as PaddleSeg does (Python literals:
    ``1e-5`` a float, ``0.75,1.0,1.25`` a list, ``None``)."""
    text = item.split("=", 1)[1]
    try:
        value = limits.load_yaml_text(text, "--opts {}".format(short_repr(item)))
    except limits.YamlError as e:
        raise ConfigError("{} --opts values are YAML: quote text, write lists as [a, b].".format(e)) \
            from None
    if isinstance(value, str):  # PaddleSeg's reading: 1e-5 (text in YAML 1.1), 0.75,1.0,1.25, None
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
        if parsed is None or isinstance(parsed, (int, float, list, tuple, dict)):
            return list(parsed) if isinstance(parsed, tuple) else parsed
    return value


def _apply_opts(dic, opts):
    for item in opts or []:
        key = item.split("=", 1)[0]
        parts = key.split(".")
        if not all(parts):
            raise ConfigError("--opts {}: {!r} is not a key; write key=value, e.g. "
                              "model.num_classes=19.".format(short_repr(item), key))
        if parts[0] not in TOP_LEVEL_KEYS:  # a misspelt `iters` would be silently ignored
            raise ConfigError("--opts {}: unknown top-level key {!r}.{} Valid keys: {}.".format(
                short_repr(item), parts[0], _closest(parts[0], TOP_LEVEL_KEYS),
                ", ".join(sorted(TOP_LEVEL_KEYS))))
        node = dic
        for i, sub in enumerate(parts[:-1]):
            if not isinstance(node, dict) or sub not in node:
                known = node if isinstance(node, dict) else {}
                raise ConfigError("--opts {}: the config has no {!r}.{} Fix the key.".format(
                    item, ".".join(parts[:i + 1]), _closest(sub, known)))
            node = node[sub]
        if not isinstance(node, dict):
            raise ConfigError("--opts {}: {} is not a section of the config.".format(
                item, ".".join(parts[:-1])))
        node[parts[-1]] = _opt_value(item)
    return dic


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _describe_value(value):
    return "{} ({})".format(short_repr(value), "text" if isinstance(value, str) else
                            type(value).__name__)


def check_counts(dic, path):
    """``iters``, ``batch_size`` and every ``num_classes`` must be integers >= 1."""
    places = [("iters", dic), ("batch_size", dic)] + [
        ("{}.num_classes".format(section), dic[section]) for section in
        ("model", "train_dataset", "val_dataset", "test_dataset")
        if isinstance(dic.get(section), dict)]
    for where, node in places:
        key = where.rsplit(".", 1)[-1]
        if key not in node:
            continue
        value = node[key]
        if not _is_int(value):
            raise ConfigError("{} in {} must be an integer, got {}. Fix it in the config or in "
                              "--opts.".format(where, path, _describe_value(value)))
        if value < 1:
            raise ConfigError("{} in {} must be at least 1, got {}. Fix it in the config or in "
                              "--opts.".format(where, path, value))


class _CheckedConfig(Config):
    """PaddleSeg's ``Config`` reading YAML with :func:`_read_yaml` and ``--opts`` as YAML
    scalars; counts are checked before PaddleSeg's own rules (which would call
    ``num_classes: five`` "not consistent")."""

    @classmethod
    def _parse_from_yaml(cls, path, *args, **kwargs):
        return _read_yaml(path)

    def __init__(self, path, **kwargs):
        self._path = path
        super().__init__(path, **kwargs)

    def update_config_dict(self, dic, learning_rate=None, batch_size=None, iters=None, opts=None):
        dic = Config.update_config_dict(dic, learning_rate=learning_rate, batch_size=batch_size,
                                        iters=iters)
        dic = _apply_opts(dic, opts)
        check_counts(dic, self._path)
        return dic


def _check_flags(learning_rate, batch_size, iters):
    for flag, value in (("--iters", iters), ("--batch_size", batch_size)):
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError("{} must be an integer of at least 1, got {}. Pass a positive "
                              "integer, or leave the flag out to use the config's value."
                              .format(flag, value))
    if learning_rate is not None and not 0 < learning_rate < float("inf"):
        raise ConfigError("--learning_rate must be a finite number greater than 0, got {}. Pass a "
                          "positive number, or leave the flag out to use the config's value."
                          .format(learning_rate))


def load_config(path, learning_rate=None, batch_size=None, iters=None, opts=None):
    """Parse and check a PaddleSeg YAML config; returns ``paddleseg.cvlibs.Config``."""
    if not os.path.isfile(path):
        raise ConfigError("Config file {} {}. Pass --config with a YAML file, e.g. "
                          "configs/rtformer/rtformer_slim_synthetic_128x128_2k.yml".format(
                              path, not_a_file(path)))
    if not path.endswith((".yml", ".yaml")):
        raise ConfigError("Config file {} must be YAML (.yml or .yaml)".format(path))
    for item in opts or []:
        if item.count("=") != 1:
            raise ConfigError("--opts takes key=value pairs such as `model.num_classes=19 "
                              "batch_size=4`; got {!r}".format(item))
    _check_flags(learning_rate, batch_size, iters)
    raw = _read_yaml(path)
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError("Unknown top-level key {!r} in {}.{} Valid keys: {}.".format(
                key, path, _closest(key, TOP_LEVEL_KEYS), ", ".join(sorted(TOP_LEVEL_KEYS))))
    try:
        cfg = _CheckedConfig(path, learning_rate=learning_rate, batch_size=batch_size, iters=iters,
                             opts=opts)
    except (AssertionError, RuntimeError, KeyError, TypeError) as e:  # PaddleSeg's own checks
        message = " ".join(str(e).split())
        raise ConfigError("Invalid config {}: {}".format(path, message)) from None
    for key in ("model", "train_dataset", "val_dataset", "optimizer"):
        check_component(cfg.dic.get(key), key)
    for i, item in enumerate((cfg.dic.get("loss") or {}).get("types", [])):
        check_component(item, "loss.types[{}]".format(i))
    lr_type = (cfg.dic.get("lr_scheduler") or {}).get("type")
    schedulers = [n for n in dir(paddle.optimizer.lr) if n != "LRScheduler" and isinstance(
        getattr(paddle.optimizer.lr, n), type) and issubclass(
        getattr(paddle.optimizer.lr, n), paddle.optimizer.lr.LRScheduler)]
    if lr_type is not None and lr_type not in schedulers:  # e.g. `math`, `LRScheduler`: no class
        raise ConfigError("Unknown lr_scheduler type {!r}.{} Use a class of paddle.optimizer.lr: {}."
                          .format(lr_type, _closest(str(lr_type), schedulers),
                                  ", ".join(schedulers)))
    if lr_type is not None:  # PaddleSeg passes the other keys to the class, warmup_* it uses itself
        parameters = dict(_parameters(getattr(paddle.optimizer.lr, lr_type)))
        defaults = dict({k: p.default for k, p in parameters.items()},
                        learning_rate=0.1, warmup_iters=0, warmup_start_lr=0.0)
        for key, value in cfg.dic["lr_scheduler"].items():
            if key in defaults:
                _check_type("lr_scheduler.{}".format(key), value, defaults[key])
        _check_scheduler_builds(cfg, path)
    return cfg


def _check_scheduler_builds(cfg, path):
    """Build the schedule as PaddleSeg's trainer will (cheap, no model): a scheduler class given
    keys it does not take (those a ``_base_`` left for another class), a missing argument, or a
    value its checks refuse (``power: .nan``, ``warmup_iters: 0``) is one paragraph here, not a
    traceback when training starts."""
    from paddleseg.cvlibs import SegBuilder
    try:
        SegBuilder(cfg).lr_scheduler
    except (RuntimeError, AssertionError, TypeError, ValueError, ZeroDivisionError,
            OverflowError) as e:
        reason = " ".join(str(e).replace("Please check lr_scheduler in config. ", "").split())
        raise ConfigError("lr_scheduler in {} cannot be built: {} Fix lr_scheduler in the config "
                          "or with --opts lr_scheduler.KEY=VALUE (a key another scheduler type "
                          "needs can be removed with a config of your own).".format(
                              path, (reason or type(e).__name__)[:400])) from None


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
