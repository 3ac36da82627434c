"""Registration into PaddleSeg's component managers under names that clash with nothing PaddleSeg has.

Every component is registered as ``RTSeg_<Name>`` (``type: RTSeg_RTFormer`` in YAML), so PaddleSeg 2.8
and PaddleSeg develop (``RTFormer``, ``SeaFormerSeg``, ``SeaFormer_tiny``, ``SegFormer``,
``MixVisionTransformer_B0``...) keep their own names and importing this package warns about nothing.
"""
import inspect

PREFIX = "RTSeg_"


def register(component_manager, name=None):
    """Class/function decorator: add ``component`` to ``component_manager`` as ``RTSeg_<name>``."""

    def decorator(component):
        key = PREFIX + (name or component.__name__)
        registered = component_manager.components_dict
        existing = registered.get(key)
        if existing is not None and getattr(existing, "__module__", None) != component.__module__:
            raise RuntimeError(
                "Cannot register {!r} in PaddleSeg's {}: the name is already taken by {}.{}.".format(
                    key, component_manager.name, existing.__module__, existing.__name__))
        registered[key] = component
        return component

    return decorator


def register_variant(component_manager, cls, name, settings, doc):
    """Register ``RTSeg_<name>``: a factory of ``cls`` preset with ``settings`` (one row of a
    paper's variant table), keyword arguments overriding the row. Its signature is ``cls``'s, keyword
    only, with the row's values as defaults, so the config check (:mod:`paddle_rtseg.config`) knows
    every argument name and type of a variant. Returns the factory."""

    def build(**kwargs):
        return cls(**dict(settings, **kwargs))

    unknown = set(settings) - set(inspect.signature(cls).parameters)
    if unknown:
        raise TypeError("{} has no argument(s) {}".format(cls.__name__, sorted(unknown)))
    build.__signature__ = inspect.Signature([
        p.replace(kind=p.KEYWORD_ONLY, default=settings.get(p.name, p.default))
        for p in inspect.signature(cls).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)])
    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    build.__module__ = cls.__module__
    build.component_class = cls  # class-level facts (e.g. lite_arm_int8_float_ops) of the variant
    return register(component_manager)(build)


def registered_names(component_manager):
    """Names this package registered in ``component_manager``."""
    return sorted(k for k in component_manager.components_dict if k.startswith(PREFIX))
