"""paddle_rtseg: a PaddleSeg plug-in. Runtime pins live in requirements.txt (the one place)."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    # the test runner and its parallel plug-in are for `make test`, not for users of the package
    lines = [line for line in lines if line and not line.startswith(("pytest", "execnet"))]
    # the deployment runtime is the package in runtime/ (it installs alone, without Paddle)
    return lines + ["paddle-rtseg-runtime @ file://" + os.path.join(HERE, "runtime")]


setup(
    name="paddle_rtseg",
    version="0.1.0",
    description="Real-time segmentation transformers (RTFormer, SeaFormer, SegFormer++, MixFormer, PalQuant) "
                "for PaddleSeg, "
                "with export to Paddle Inference, ONNX and Paddle Lite",
    packages=find_packages(include=["paddle_rtseg", "paddle_rtseg.*"]),
    python_requires=">=3.8",
    install_requires=requirements(),
)
