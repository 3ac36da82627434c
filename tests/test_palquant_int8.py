"""PalQuant deployed exactly on int8 kernels (issue 27, paddle_rtseg.quantization.palquant_int8).

A tiny PalQuant segmentor (quantizers initialised on a batch) goes through the user's command,
``python -m paddle_rtseg.quantize`` (which detects the PalQuant integer convolutions): its int8
programs must equal the dygraph fake-quant model up to float rounding, with the same class maps, on
ONNX Runtime's ConvInteger, Paddle Inference's OpenVINO int8 engine, Paddle Inference's fake-quant
program in float, and Paddle Lite's real ARM int8 kernels (qemu), for W2A2 with 2 parallel groups
and W4A4. Paddle Inference's oneDNN int8 is measured not to be exact (module docstring of
palquant_int8: it re-quantizes the filters), as documented.
"""
import os

import numpy as np
import paddle
import pytest

from conftest import CONFIGS, run_module, write_config
import paddle_rtseg
import paddle_rtseg_runtime as du
from paddle_rtseg.layers.palquant_conv import INTEGER_WEIGHT_PREFIX, QConv, init_quantizers
from paddle_rtseg_runtime import lite_arm

PALQUANT_SYNTHETIC = os.path.join(CONFIGS, "palquant", "palquant_r18_g2w2a2_synthetic_128x128_2k.yml")
CASES = {"g2_w2a2": dict(groups=2, levels=4), "g1_w4a4": dict(groups=1, levels=16)}
# batch 2 and sizes that are no multiple of 32, on one predictor each
SHAPES = [(2, 3, 64, 96), (1, 3, 97, 131), (1, 3, 64, 64)]
FLOAT_ROUNDING = 1e-4  # of max|logit|: float32 reassociation in the fp32 stem and head
ARM_REASON = lite_arm.unavailable_reason()
needs_arm = pytest.mark.skipif(ARM_REASON is not None and not os.environ.get("RTSEG_REQUIRE_ARM"),
                               reason="ARM tests skipped: {}".format(ARM_REASON))


@pytest.fixture(scope="module", params=list(CASES))
def exact(request, tmp_path_factory, synthetic_root):
    """(model, number of integer convs, quantize's save_dir, its stdout) for one CASES entry."""
    case = CASES[request.param]
    folder = tmp_path_factory.mktemp("palquant_int8_" + request.param)
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    backbone = dict(groups=case["groups"], weight_levels=case["levels"],
                    act_levels=case["levels"], base_channels=4)
    config = write_config(folder / "tiny.yml", PALQUANT_SYNTHETIC, **datasets,
                          model=dict(head_channels=16, backbone=backbone))
    paddle.seed(1)
    model = paddle_rtseg.build_model(config)
    init_quantizers(model, paddle.randn([4, 3, 64, 64]))
    model.eval()
    paddle.save(model.state_dict(), str(folder / "model.pdparams"))
    out = run_module("paddle_rtseg.quantize", "--config", config, "--model_path",
                     folder / "model.pdparams", "--save_dir", folder / "q", "--evaluate", "false",
                     cwd=folder)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    integer = sum(1 for m in model.sublayers() if isinstance(m, QConv))
    return model, integer, folder / "q", out.stdout


def _inputs():
    return [np.random.RandomState(20 + i).randn(*s).astype("float32") for i, s in enumerate(SHAPES)]


def _check(name, refs, outs):
    for ref, out in zip(refs, outs):
        assert out.shape == ref.shape, (name, out.shape)
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        print("{} {}: max error {:.1e} of max|logit|".format(name, ref.shape, err))
        assert err < FLOAT_ROUNDING, (name, ref.shape, err)
        top2 = np.sort(ref, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * FLOAT_ROUNDING * np.abs(ref).max()
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(out.argmax(1)[clear], ref.argmax(1)[clear])


def _refs(model, xs):
    with paddle.no_grad():
        return [model(paddle.to_tensor(x))[0].numpy() for x in xs]


def test_export_is_the_integer_form(exact):
    """Every QConv exports as a conv whose filter is the odd integers of its levels, under the
    name the int8 programs look for; no weight quantizer is evaluated at run time."""
    import onnx
    from onnx import numpy_helper
    model, integer, q, stdout = exact
    assert "PalQuant model: its low-bit convolutions are quantized exactly" in stdout
    graph = onnx.load(str(q / "fp32" / "model.onnx")).graph
    filters = {i.name: numpy_helper.to_array(i) for i in graph.initializer
               if i.name.startswith(INTEGER_WEIGHT_PREFIX)}
    assert len(filters) == integer
    levels = model.backbone.weight_levels
    for k in filters.values():
        assert set(np.unique(k)) <= set(range(-(levels - 1), levels, 2))
    assert not any(n.op_type == "Round" and "weight" in n.input[0] for n in graph.node)


def test_int8_programs_equal_the_fake_quant_model(exact):
    """ONNX Runtime (ConvInteger: integer kernels, int32 accumulation), Paddle Inference's
    OpenVINO int8 engine and the fake-quant program in float: the dygraph logits up to float
    rounding, the same class maps; oneDNN int8 measured, not exact."""
    import onnx
    model, integer, q, _ = exact
    ptq = str(q / "ptq_int8")
    xs = _inputs()
    refs = _refs(model, xs)
    int8_onnx = du.default_onnx_file(ptq, "int8")
    ops = [n.op_type for n in onnx.load(int8_onnx).graph.node]
    assert ops.count("ConvInteger") == integer and "Conv" in ops  # the fp32 stem and head
    ort = du.OnnxPredictor(int8_onnx, precision="int8", allow_slow=True)
    _check("onnxruntime ConvInteger", refs, [ort(x) for x in xs])
    simulated = du.PaddleInferencePredictor(ptq, use_mkldnn=False)
    _check("Paddle Inference fake-quant (float)", refs, [simulated(x) for x in xs])
    if du.openvino_available():
        openvino = du.PaddleInferencePredictor(ptq, precision="int8", use_openvino=True,
                                               allow_slow=True)
        _check("Paddle Inference OpenVINO int8", refs, [openvino(x) for x in xs])
    onednn = du.PaddleInferencePredictor(ptq, precision="int8", allow_slow=True)
    errors = [float(np.abs(onednn(x) - r).max() / np.abs(r).max()) for x, r in zip(xs, refs)]
    print("oneDNN int8 (re-quantized filters): max error {:.1e} of max|logit|".format(max(errors)))
    assert max(errors) > 100 * FLOAT_ROUNDING  # the documented limitation still holds


@needs_arm
def test_arm_kernels_fp32_and_exact_int8(exact):
    """Paddle Lite's ARM .nb of the fp32 export and of the exact int8 program: every integer conv
    of the int8 one on an int8 kernel (one fp32 -> int8 calibration op each in the .nb, none in
    the fp32 one); every SHAPES input on one predictor each equal to dygraph up to float
    rounding."""
    model, integer, q, _ = exact
    xs = _inputs()
    refs = _refs(model, xs)
    tools = lite_arm.build_tools()
    for name, folder, calib_ops in (("fp32", "fp32", 0), ("int8", "ptq_int8", integer)):
        nb = du.convert_lite(str(q / folder), str(q / ("lite_arm_" + name)), "arm")
        with open(nb, "rb") as f:
            assert f.read().count(b"calib/fp32_to_int8") == calib_ops
        _check("Paddle Lite ARM " + name, refs, lite_arm.run_raw(nb, xs, tools))


def test_refuses_a_model_without_integer_convolutions(tmp_path):
    """onnx_conv_integer on an ONNX model with no PalQuant conv: one error naming the file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from paddle_rtseg.quantization.palquant_int8 import NotPalQuantError, onnx_conv_integer
    w = numpy_helper.from_array(np.ones([2, 3, 1, 1], np.float32), "conv2d_0.w_0")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = str(tmp_path / "plain.onnx")
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(NotPalQuantError, match="plain.onnx has no PalQuant integer convolution"):
        onnx_conv_integer(path, str(tmp_path / "out.onnx"))
    assert not os.path.exists(tmp_path / "out.onnx")
