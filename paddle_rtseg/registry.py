"""Registration into PaddleSeg's component managers under names that clash with nothing PaddleSeg has.

Every component is registered as ``RTSeg_<Name>`` (``type: RTSeg_RTFormer`` in YAML), so PaddleSeg 2.8
and PaddleSeg develop (``RTFormer``, ``SeaFormerSeg``, ``SeaFormer_tiny``, ``SegFormer``,
``MixVisionTransformer_B0``...) keep their own names and importing this package warns about nothing.
"""
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


def registered_names(component_manager):
    """Names this package registered in ``component_manager``."""
    return sorted(k for k in component_manager.components_dict if k.startswith(PREFIX))
