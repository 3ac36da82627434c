"""paddle_rtseg: real-time segmentation transformers (RTFormer, SeaFormer, SegFormer++, MixFormer,
PalQuant) for PaddleSeg.

Importing the package applies the paddleseg-2.8-on-Paddle-3 fixes (:mod:`.compat`), routes
PaddleSeg's weight readers through the safe unpickler (:mod:`.weights.safe_paddleseg`) and registers
every model, backbone and dataset with ``paddleseg.cvlibs.manager`` under ``RTSeg_*`` names. Before
any of that it lets MKL take its AVX2 path on AMD CPUs (:mod:`paddle_rtseg_runtime.mkl_dispatch`).

The layout, one folder per role (docs/development.md): ``layers/`` <- ``models/`` <- ``exporting/``,
``quantization/`` <- ``cli/``, ``benchmarks/``; ``weights/`` and ``datasets/`` below the models;
the deployment runtime is the separate package ``paddle_rtseg_runtime`` (``runtime/``).
"""
import warnings

from paddle_rtseg_runtime import mkl_dispatch  # Paddle-free

MKL_DISPATCH = mkl_dispatch.apply()  # before Paddle's first MKL call; the reason, for benchmarks

warnings.filterwarnings("ignore", message="No ccache found")  # printed by every `import paddle`

from paddle_rtseg import compat  # noqa: E402
from paddle_rtseg.weights import safe_paddleseg  # noqa: E402

compat.defer_sklearn()
compat.apply()
safe_paddleseg.apply()

from paddle_rtseg import datasets, layers, models  # noqa: E402,F401  (registration needs the fixes first)
from paddle_rtseg.cli import install_command_names  # noqa: E402
from paddle_rtseg.config import ConfigError, build_model, load_config  # noqa: E402
from paddle_rtseg.weights.checkpoints import CheckpointMismatchError, load_checkpoint  # noqa: E402

install_command_names(__name__)  # python -m paddle_rtseg.train etc. (paddle_rtseg/cli/__init__.py)

__version__ = "0.1.0"
__all__ = ["build_model", "load_checkpoint", "load_config", "ConfigError",
           "CheckpointMismatchError"]
