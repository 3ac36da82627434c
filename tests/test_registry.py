"""Registration: every component under RTSeg_*, nothing PaddleSeg has is touched, no warnings."""
import subprocess
import sys

from paddleseg.cvlibs import manager

import paddle_rtseg
from paddle_rtseg.registry import PREFIX, registered_names

# Names registered by PaddleSeg develop that 2.8 does not have (REFERENCES.md §2.3/§2.4).
PADDLESEG_DEVELOP = {"SeaFormerSeg", "SeaFormer_tiny", "SeaFormer_small", "SeaFormer_base",
                     "SeaFormer_large", "MobileSeg_Base", "MobileSeg_Tiny", "PPMobileSeg",
                     "StrideFormer", "RTFormer", "SegFormer"}


def test_import_prints_no_warning():
    out = subprocess.run([sys.executable, "-W", "default", "-c", "import paddle_rtseg"],
                         capture_output=True, text=True, check=True)
    assert "exists already" not in out.stderr + out.stdout
    assert "Warning" not in out.stderr, out.stderr


def test_names_are_prefixed_and_do_not_shadow_paddleseg():
    ours = registered_names(manager.MODELS) + registered_names(manager.BACKBONES) + \
        registered_names(manager.DATASETS)
    assert "RTSeg_RTFormer" in ours and "RTSeg_Synthetic" in ours
    for component_manager in (manager.MODELS, manager.BACKBONES, manager.DATASETS):
        for name, component in component_manager.components_dict.items():
            if component.__module__.startswith("paddle_rtseg"):
                assert name.startswith(PREFIX)
                assert name not in PADDLESEG_DEVELOP
            else:
                assert not name.startswith(PREFIX)
    assert manager.MODELS["RTFormer"].__module__ == "paddleseg.models.rtformer"


def test_public_api():
    assert callable(paddle_rtseg.build_model) and callable(paddle_rtseg.load_checkpoint)


VARIANT_ROWS = {"RTSeg_MiT_B3": ("depths", (3, 4, 18, 3)),  # not the class defaults
                "RTSeg_MixFormer_B3": ("embed_dim", 48),
                "RTSeg_SeaFormer_large": ("stem_channels", 32)}


def test_variants_show_their_arguments_to_the_config_check():
    """Variant factories (register_variant) carry their class's arguments, the table row as
    defaults: a misspelt or mistyped backbone argument is caught by the config check with the fix,
    not by a TypeError inside PaddleSeg's builder; a valid override builds."""
    import inspect

    import pytest
    from paddle_rtseg.config import ConfigError, check_component
    for name, (key, value) in VARIANT_ROWS.items():
        factory = manager.BACKBONES.components_dict[name]
        assert inspect.signature(factory).parameters[key].default == value
        with pytest.raises(ConfigError, match="takes no argument {!r}.*Did you mean '{}'".format(
                key + "x", key)):
            check_component({"type": name, key + "x": value}, "model.backbone")
        with pytest.raises(ConfigError, match="drop_path_rate must be a number, got 'abc'"):
            check_component({"type": name, "drop_path_rate": "abc"}, "model.backbone")
    backbone = manager.BACKBONES.components_dict["RTSeg_MiT_B0"](depths=(1, 1, 1, 1))
    assert [len(getattr(backbone, "block{}".format(i))) for i in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert backbone.feat_channels == [32, 64, 160, 256]
