"""The pattern that broke oneDNN int8 (run by ``test_precision.py`` in a legacy-static process).

``y = relu(conv_a(x)); z = conv_c(y + conv_b(relu(conv_e(y))))``: a convolution added to a ReLU output (uint8 in
oneDNN) with no activation after the add, as in SeaFormer's first inverted-residual block. Paddle's
int8 conv + residual-add fusion writes that sum in the residual's uint8, clipping its negative half
to 0; ``PaddleInferencePredictor`` turns the fusion off for int8. Prints one JSON line: how far the
int8 output is from fp32 (relative to fp32's largest magnitude) and the share of negative sums.

    FLAGS_enable_pir_api=0 python tests/onednn_residual_case.py WORK_DIR
"""
import json
import os
import sys

import numpy as np
import yaml


def build(fp32_dir):
    """Writes the fp32 legacy program (+ ``deploy.yaml``); returns (images, share of negative sums)."""
    import paddle
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    rng = np.random.RandomState(0)

    def conv(name, x, cin, cout, k, shift):
        """conv (no bias) + batch norm, as exported models have them (oneDNN folds the BN)."""
        w = paddle.static.create_parameter([cout, cin, k, k], "float32", name=name + ".w",
                                           default_initializer=paddle.nn.initializer.Assign(
                                               rng.normal(0, (2.0 / (cin * k * k)) ** 0.5,
                                                          (cout, cin, k, k)).astype("float32")))
        constant = paddle.nn.initializer.Constant
        return paddle.static.nn.batch_norm(
            paddle.nn.functional.conv2d(x, w, padding=k // 2), is_test=True,
            param_attr=paddle.ParamAttr(name=name + ".g", initializer=constant(1.0)),
            bias_attr=paddle.ParamAttr(name=name + ".beta", initializer=constant(shift)),
            moving_mean_name=name + ".mean", moving_variance_name=name + ".var")

    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [-1, 3, -1, -1], "float32")
        y = paddle.nn.functional.relu(conv("a", x, 3, 16, 3, 0.0))
        t = paddle.nn.functional.relu(conv("e", y, 16, 32, 1, 0.0))
        s = y + conv("b", t, 32, 16, 1, -0.5)  # a projection added to a ReLU output, no ReLU after
        out = conv("c", s, 16, 8, 1, 0.0)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    images = [rng.uniform(-1, 1, (1, 3, 32, 32)).astype("float32") for _ in range(4)]
    sums = np.concatenate([exe.run(main, feed={"x": im}, fetch_list=[s])[0].ravel()
                           for im in images])
    paddle.static.save_inference_model(os.path.join(fp32_dir, "model"), [x], [out], exe,
                                       program=main)
    paddle.disable_static()
    with open(os.path.join(fp32_dir, "deploy.yaml"), "w") as f:
        yaml.safe_dump({"Deploy": {"model": "model.pdmodel", "params": "model.pdiparams",
                                   "transforms": [], "input_shape": [-1, 3, -1, -1],
                                   "output_op": "none"}}, f)
    return images, float((sums < 0).mean())


def main(work):
    import paddle_rtseg_runtime as du
    from paddle_rtseg.quantization.ptq import post_training_quantize
    fp32_dir, int8_dir = os.path.join(work, "fp32"), os.path.join(work, "ptq_int8")
    os.makedirs(fp32_dir, exist_ok=True)
    images, negative = build(fp32_dir)
    post_training_quantize(fp32_dir, int8_dir, images, "abs_max", log=lambda *_: None)
    fp32 = du.PaddleInferencePredictor(fp32_dir, threads=1)
    int8 = du.PaddleInferencePredictor(int8_dir, threads=1, precision="int8", allow_slow=True)
    error = max(float(np.abs(int8(im) - fp32(im)).max() / np.abs(fp32(im)).max())
                for im in images)
    print(json.dumps({"relative_error": error, "negative_sums": negative}))


if __name__ == "__main__":
    main(sys.argv[1])
