"""What ``paddle_rtseg.quantization.onnx_int8`` quantizes for ONNX Runtime: convolutions, element-wise ops, weight
matmuls and ``attn v`` in int8; the attention scores' softmax and resizes in fp32."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from paddle_rtseg_runtime import cpu_features
from paddle_rtseg.quantization.onnx_int8 import quantize_onnx_int8, score_matmuls

# Without VNNI, ONNX Runtime's uint8 x int8 kernels saturate their 16-bit pair sums with 8-bit
# weights (largest errors 32-47 % of the largest output on these blocks, on an AVX2-only EPYC):
# there the models are quantized with 7-bit weights, as quantize_onnx_int8 documents.
REDUCE_RANGE = not cpu_features.support("int8")[0]


def attention_block(path=None, bias=False):
    """x (1x4x8x8) -> conv -> + x -> tokens; q = tokens W (weight matmul); softmax(q q^T) q;
    -> 2x resize: the ops of the families' attention blocks, small. ``bias``: a constant added to
    the scores before the softmax (MixFormer's relative-position bias)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.2 * rng.normal(size=(4, 4, 3, 3))).astype("float32"), "w_conv"),
             numpy_helper.from_array((0.3 * rng.normal(size=(4, 4))).astype("float32"), "w_q"),
             numpy_helper.from_array(np.array([1, 4, 64], "int64"), "flat"),
             numpy_helper.from_array(np.array([1, 4, 8, 8], "int64"), "grid"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], "float32"), "scales"),
             numpy_helper.from_array(rng.normal(size=(64, 64)).astype("float32"), "bias")]
    if not bias:
        inits = inits[:-1]
    nodes = [helper.make_node("Conv", ["x", "w_conv"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "x"], ["r"], name="residual"),
             helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
             helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1], name="tokens"),
             helper.make_node("MatMul", ["t", "w_q"], ["q"], name="q_proj"),
             helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1], name="q_t"),
             helper.make_node("MatMul", ["q", "qt"], ["s0" if bias else "s"], name="scores"),
             *([helper.make_node("Add", ["s0", "bias"], ["s"], name="score_bias")] if bias else []),
             helper.make_node("Softmax", ["s"], ["a"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["a", "q"], ["o"], name="attend"),
             helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1], name="back"),
             helper.make_node("Reshape", ["ot", "grid"], ["g"], name="to_grid"),
             helper.make_node("Resize", ["g", "", "scales"], ["y"], mode="linear", name="up")]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if path:
        onnx.save(model, path)
    return model


def test_attention_scores_are_found():
    from paddle_rtseg.quantization.onnx_int8 import score_paths
    assert score_matmuls(attention_block()) == ["scores"]
    assert score_paths(attention_block()) == []
    assert score_matmuls(attention_block(bias=True)) == ["scores"]
    assert score_paths(attention_block(bias=True)) == ["score_bias"]


@pytest.mark.parametrize("bias", [False, True])
def test_int8_model_keeps_attention_softmax_and_resize_in_fp32(tmp_path, bias):
    fp32 = str(tmp_path / "fp32.onnx")
    attention_block(fp32, bias)
    rng = np.random.default_rng(1)
    calibration = [rng.normal(size=(1, 4, 8, 8)).astype("float32") for _ in range(8)]
    out = quantize_onnx_int8(fp32, str(tmp_path / "int8.onnx"), calibration,
                             reduce_range=REDUCE_RANGE)
    # the kernels ONNX Runtime runs (its optimized graph): the convolution, the residual add, the
    # weight matmul and ``attn v`` in int8; the scores product reads q (int8) on both sides and
    # writes fp32 (MatMulIntegerToFloat), so the softmax gets an fp32 input and runs in fp32 (no
    # QLinearSoftmax); the resize runs in fp32
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
    kernels = sorted(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node
                     if node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Reshape",
                                             "Transpose"))
    assert kernels == sorted(["MatMulIntegerToFloat", "QLinearAdd", "QLinearConv", "QLinearMatMul",
                              "QLinearMatMul", "Resize", "Softmax"] + (["Add"] if bias else [])), \
        kernels
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    x = calibration[0]
    got, expected = session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0]
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()


def gelu_block(path=None, sqrt2=2 ** 0.5):
    """x -> conv -> GELU as paddle2onnx writes it (x * (erf(x / sqrt 2) + 1) * 0.5) -> conv."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((0.3 * rng.normal(size=(4, 4, 1, 1))).astype("float32"), name)
             for name in ("w1", "w2")]
    inits += [numpy_helper.from_array(np.array(v, "float32"), name)
              for name, v in (("sqrt2", sqrt2), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="fc1"),
             helper.make_node("Div", ["c", "sqrt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"], name="add"),
             helper.make_node("Mul", ["c", "a"], ["m"], name="mul"),
             helper.make_node("Mul", ["m", "half"], ["g"], name="half"),
             helper.make_node("Conv", ["g", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if path:
        onnx.save(model, path)
    return model


def test_gelu_fused_for_ort_int8(tmp_path):
    """The exact GELU becomes one com.microsoft.Gelu (the same function) before quantizing: ORT's
    int8 graph then runs one Gelu kernel between the int8 convolutions instead of Div, Erf and two
    quantized Muls. A look-alike with another constant is left alone."""
    from paddle_rtseg.quantization.onnx_int8 import fuse_gelu
    assert fuse_gelu(gelu_block(sqrt2=2.0)) == 0
    model = gelu_block()
    assert fuse_gelu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "Gelu", "Conv"]
    fp32, fused = str(tmp_path / "fp32.onnx"), str(tmp_path / "fused.onnx")
    gelu_block(fp32)
    onnx.save(model, fused)
    x = np.random.default_rng(3).normal(size=(1, 4, 8, 8)).astype("float32")
    run = lambda path: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(  # noqa
        None, {"x": x})[0]
    np.testing.assert_allclose(run(fused), run(fp32), rtol=1e-5, atol=1e-6)
    calibration = [np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype("float32")
                   for i in range(8)]
    out = quantize_onnx_int8(fp32, str(tmp_path / "int8.onnx"), calibration,
                             reduce_range=REDUCE_RANGE)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
    kernels = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node
               if node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Transpose")]
    assert "Gelu" in kernels and "Erf" not in kernels and "QLinearMul" not in kernels, kernels
    assert kernels.count("QLinearConv") == 2, kernels
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - run(fp32)).max() < 0.05 * np.abs(run(fp32)).max()


def resize_by_shape_block(path=None):
    """x -> conv -> resize to sizes = 2 * shape(x), computed in float as paddle2onnx writes
    dynamic sizes (Shape -> Cast float -> Mul -> Cast int64): an int8 model must give the right size
    at input sizes other than the calibration size."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array((0.3 * rng.normal(size=(4, 4, 1, 1))).astype("float32"), "w"),
             numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], "float32"), "factor")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Shape", ["c"], ["shape"], name="shape"),
             helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT, name="to_float"),
             helper.make_node("Mul", ["shape_f", "factor"], ["sizes_f"], name="double"),
             helper.make_node("Cast", ["sizes_f"], ["sizes"], to=TensorProto.INT64, name="to_int"),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["r"], mode="linear", name="up"),
             helper.make_node("Conv", ["r", "w"], ["y"], name="head")]
    graph = helper.make_graph(
        nodes, "resize_by_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h2", "w2"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if path:
        onnx.save(model, path)
    return model


def test_shape_arithmetic_stays_fp32_so_other_sizes_work(tmp_path):
    """Calibrated at 8x8, run at 32x48: the float arithmetic on shapes is not quantized (its
    calibrated range would clip 64 and 96 to the 16 seen in calibration)."""
    from paddle_rtseg.quantization.onnx_int8 import shape_arithmetic
    assert shape_arithmetic(resize_by_shape_block()) == ["shape", "to_float", "double", "to_int"]
    fp32 = str(tmp_path / "fp32.onnx")
    resize_by_shape_block(fp32)
    calibration = [np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype("float32")
                   for i in range(8)]
    out = quantize_onnx_int8(fp32, str(tmp_path / "int8.onnx"), calibration,
                             reduce_range=REDUCE_RANGE)
    x = np.random.default_rng(9).normal(size=(1, 4, 32, 48)).astype("float32")
    expected = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == expected.shape == (1, 4, 64, 96)
    assert np.abs(got - expected).mean() < 0.05 * np.abs(expected).mean()


def test_op_profile_script_names_the_kernels(tmp_path):
    """``scripts/ort_op_profile.py`` (the per-operator times docs/deployment.md §5b quotes): on the
    int8 GELU block it lists the fused Gelu and the int8 convolutions; a missing model exits 2."""
    import os
    import re
    import subprocess
    import sys
    from conftest import ROOT
    fp32 = str(tmp_path / "fp32.onnx")
    gelu_block(fp32)
    calibration = [np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype("float32")
                   for i in range(4)]
    out = quantize_onnx_int8(fp32, str(tmp_path / "int8.onnx"), calibration,
                             reduce_range=REDUCE_RANGE)
    script = os.path.join(ROOT, "scripts", "ort_op_profile.py")
    proc = subprocess.run([sys.executable, script, "--model", out, "--shape", "1", "4", "8", "8",
                           "--runs", "2", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"median call [\d.]+ ms, kernels [\d.]+ ms a call", proc.stdout), proc.stdout
    rows = dict(re.findall(r"^(\w+)\s+[\d.]+\s+(\d+)\s+[\d.]+%$", proc.stdout, re.M))
    assert rows.get("Gelu") == "1" and rows.get("QLinearConv") == "2", proc.stdout
    proc = subprocess.run([sys.executable, script, "--model", str(tmp_path / "none.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is not a file" in proc.stderr, proc.stderr


def test_reduce_range_keeps_weights_in_7_bits(tmp_path):
    """The form for CPUs without VNNI: every int8 weight in [-64, 64], so no uint8 x int8 pair sum
    can saturate 16 bits (2 * 255 * 64 = 32640 < 32767); the default uses the full int8 range."""
    fp32 = str(tmp_path / "fp32.onnx")
    attention_block(fp32, True)
    calibration = [np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype("float32")
                   for i in range(4)]
    ranges = {}
    for reduce_range in (False, True):
        out = quantize_onnx_int8(fp32, str(tmp_path / "int8_{}.onnx".format(reduce_range)),
                                 calibration, reduce_range=reduce_range)
        weights = [numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer
                   if t.data_type == TensorProto.INT8 and t.dims]
        assert weights
        ranges[reduce_range] = (min(w.min() for w in weights), max(w.max() for w in weights))
    assert ranges[True][0] >= -64 and ranges[True][1] <= 64, ranges
    assert ranges[False][0] < -64 or ranges[False][1] > 64, ranges


@pytest.mark.skipif(not REDUCE_RANGE, reason="this CPU has VNNI: no saturation to show")
@pytest.mark.parametrize("block", ["attention", "attention+bias", "gelu"])
def test_without_vnni_8bit_weights_saturate_and_7bit_do_not(tmp_path, block):
    """Why REDUCE_RANGE: on a CPU without VNNI the 8-bit weights' error is far above the int8
    tolerance and the 7-bit weights' within it (prints both: docs/deployment.md quotes them)."""
    fp32 = str(tmp_path / "fp32.onnx")
    if block == "gelu":
        gelu_block(fp32)
    else:
        attention_block(fp32, block.endswith("bias"))
    rng = np.random.default_rng(1)
    calibration = [rng.normal(size=(1, 4, 8, 8)).astype("float32") for _ in range(8)]
    x = calibration[0]
    expected = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    errors = {}
    for reduce_range in (False, True):
        out = quantize_onnx_int8(fp32, str(tmp_path / "int8_{}.onnx".format(reduce_range)),
                                 calibration, reduce_range=reduce_range)
        got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        errors[reduce_range] = float(np.abs(got - expected).max() / np.abs(expected).max())
    print("{}: largest error / largest |output|: 8-bit weights {:.3f}, 7-bit {:.3f}".format(
        block, errors[False], errors[True]))
    assert errors[False] > 0.2 and errors[True] < 0.05, errors
