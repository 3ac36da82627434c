"""Export: a trained model to a static graph plus PaddleSeg's ``deploy.yaml`` (:mod:`.static_graph`),
with the program rewrites the backends need (:mod:`.conv_bias_add`). The command is
``python -m paddle_rtseg.export``; converting to ONNX / Paddle Lite and running the result is the
runtime's job (``paddle_rtseg_runtime``)."""
from .static_graph import ExportError, drop_pretrained, export, pir_active  # noqa: F401
