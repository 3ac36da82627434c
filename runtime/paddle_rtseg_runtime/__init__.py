"""paddle_rtseg_runtime: what every deployment runner shares -- reading an exported model directory
(``deploy.yaml``), PaddleSeg's pre/post-processing, one predictor per backend, and the converters.

A package of its own (``pip install ./runtime``, extras ``[onnx]``, ``[lite]``,
``[paddle]``): nothing here imports Paddle at module level (only numpy, OpenCV and PyYAML) and
nothing imports ``paddle_rtseg``, so it installs and runs on a device that has only its backend
(ONNX Runtime, Paddle Lite). Backends are imported when a predictor is created. ``paddle_rtseg``
(training, export) depends on it; the runners in ``deploy/`` import it.
"""
from . import cpu_features, mkl_dispatch, run_lock
from .converters import DEFAULT_OPSET, convert_lite, convert_onnx, lite_model_ops
from .errors import DeployError, DiskFullError, reporting_full_disk
from .files import default_mode, write_bytes_atomic
from .images import (IMAGE_EXTENSIONS, check_inputs_kept, list_images, output_names, read_image,
                     to_uint8)
from .model_dir import model_paths, read_deploy_yaml
from .onnx_runtime import OnnxPredictor, default_onnx_file
from .paddle_inference import (PaddleInferencePredictor, is_quantized, openvino_available,
                               openvino_int8_paths)
from .paddle_lite import LitePredictor
from .predictor import Predictor
from .program import onednn_resize_is_exact, read_program
from .transforms import check_input, preprocess
from .video import (FrameSource, add_video_args, is_video, segment_video, video_input,
                    VIDEO_EXTENSIONS)
from .visualize import color_map, encode, overlay, pseudo_color_png, save_results, to_label_map
