"""Post-training int8 for every backend: Paddle's PTQ (:mod:`.ptq`) and ONNX Runtime's static QDQ
model (:mod:`.onnx_int8`). The command is ``python -m paddle_rtseg.quantize``. Quantization-aware
low-bit networks (PalQuant) are layers and models: ``layers/palquant_conv.py``,
``models/palquant.py``."""
