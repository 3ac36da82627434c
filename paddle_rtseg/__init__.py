"""paddle_rtseg: real-time segmentation transformers (RTFormer, SeaFormer, SegFormer++) for PaddleSeg.

Importing the package applies the paddleseg-2.8-on-Paddle-3 fixes (:mod:`paddle_rtseg.compat`),
routes PaddleSeg's weight readers through the safe unpickler (:mod:`paddle_rtseg.safe_paddleseg`) and
registers every model, backbone and dataset with ``paddleseg.cvlibs.manager`` under ``RTSeg_*`` names.
Before any of that it lets MKL take its AVX2 path on AMD CPUs
(:mod:`paddle_rtseg.deployment.mkl_dispatch`).
"""
import warnings

from .deployment import mkl_dispatch  # Paddle-free

MKL_DISPATCH = mkl_dispatch.apply()  # before Paddle's first MKL call; the reason, for benchmarks

warnings.filterwarnings("ignore", message="No ccache found")  # printed by every `import paddle`

from . import compat, safe_paddleseg  # noqa: E402

compat.apply()
safe_paddleseg.apply()

from . import datasets, layers, models  # noqa: E402,F401  (registration needs the fixes first)
from .checkpoints import CheckpointMismatchError, load_checkpoint  # noqa: E402
from .config import ConfigError, build_model, load_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "load_checkpoint", "load_config", "ConfigError",
           "CheckpointMismatchError"]
