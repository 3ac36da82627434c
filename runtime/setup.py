"""paddle-rtseg-runtime: run models exported by paddle_rtseg without Paddle's training stack.

``pip install ./runtime[onnx]`` (or ``[lite]``, or ``[paddle]`` for Paddle Inference and its OpenVINO engine)
installs the package the runners in ``deploy/`` import. Versions are the ones ``requirements.txt``
pins for the whole project.
"""
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def pinned(*names):
    """``name==version`` lines of the project's requirements.txt for ``names``."""
    with open(os.path.join(os.path.dirname(HERE), "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    found = [line for line in lines if line.split("==")[0] in names]
    assert len(found) == len(names), (names, found)
    return found


setup(
    name="paddle-rtseg-runtime",
    version="0.1.0",
    description="Deployment runtime of paddle_rtseg: deploy.yaml, pre/post-processing and predictors "
                "for ONNX Runtime, Paddle Lite, OpenVINO and Paddle Inference",
    packages=["paddle_rtseg_runtime"],
    python_requires=">=3.8",
    install_requires=pinned("numpy", "opencv-python", "pyyaml", "pillow"),
    extras_require={
        "onnx": pinned("onnxruntime", "onnx"),
        "lite": pinned("paddlelite"),
        "paddle": pinned("paddlepaddle"),
    },
)
