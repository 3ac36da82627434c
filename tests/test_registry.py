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
