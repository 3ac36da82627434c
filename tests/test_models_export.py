"""The conformance suite, deployment half: every model of tests/test_models.py's MODELS exported ONCE
(``paddle_rtseg.exporting.static_graph.export``, legacy program, dynamic batch and H/W, logits), then:

* the program: dynamic ``deploy.yaml`` input shape, one block, Lite-loadable (flatten ops declare
  XShape, no 0-D fill_constant), none of the ops DESIGN.md bans (linear_interp_v2, unique,
  set_value, control flow);
* every backend against dygraph, at batch 1 and 2 and sizes that are not multiples of 32 (each
  shape on the same predictors, so one program serves them all): Paddle Inference with oneDNN and
  native kernels, its OpenVINO engine where this Paddle has it, ONNX Runtime (paddle2onnx, opset
  17, every LayerNorm one LayerNormalization node) and Paddle Lite's x86 runtime;
* Paddle Lite ARM: ``opt --valid_targets=arm`` has a kernel for every op and writes the ``.nb``
  (the ARM kernels themselves run under qemu in tests/test_arm.py);
* ``scripts/onnx_opset_speed.py`` on the SegFormer++ export.

A second file beside tests/test_models.py so that pytest-xdist's ``--dist loadfile`` runs the two
halves on two workers.
"""
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import paddle
import pytest
import yaml
from conftest import ROOT
from test_models import MODELS, NAMES, relative_error, trained_like

import paddle_rtseg_runtime as du

# Batch 1 and 2; multiples of 32 and odd sides: 97x131 and 100x75 give 1/32 maps of <= 4 px
# (RTFormer's pooled 12x12 bins larger than the map); 128x128 whole MixFormer windows at 1/4,
# 96x160 and 75x133 padded windows and odd merges; 65x97 batch 2 odd on both sides.
SHAPES = [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 97, 131), (2, 3, 100, 75), (2, 3, 128, 128),
          (1, 3, 96, 160), (1, 3, 75, 133), (2, 3, 65, 97)]
RTOL = 1e-4
# Measured exception: the tiny synthetic SeaFormer's logits are small (max |logit| ~0.1 with random
# weights), so float32 reassociation in oneDNN / Lite x86 (~1e-5 absolute) reaches 1.1e-4 (oneDNN,
# 1x3x97x131) and 2.5e-4 (Lite x86, 2x3x100x75) relative in some runs, and OpenVINO's 1.03e-4
# (1x3x97x131, with dygraph's reference on MKL's AVX2 path); the other models stay below 1e-5.
# Kept visible here rather than loosening RTOL for every model.
RTOL_EXCEPTIONS = {("seaformer", name): 1e-3 for name in
                   ("paddle-inference-cpu-onednn", "paddle-inference-cpu", "onnxruntime",
                    "paddle-lite", "paddle-inference-cpu-openvino")}
# class maps equal too (PalQuant's fake-quant logits, as its export test always asked)
ARGMAX_EQUAL = {"palquant", "palquant_rtformer"}
# ops that show Lite's op table was parsed (every model has convolutions; all but PalQuant attention)
EXPECTED_OPS = {name: {"conv2d", "matmul_v2"} for name in NAMES}
EXPECTED_OPS["palquant"] = {"conv2d"}
BANNED_OPS = {"linear_interp_v2", "unique", "set_value", "conditional_block", "select_input",
              "while", "depthwise_conv2d_transpose"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{name: (dygraph model in eval mode, export folder)}: every model with trained-looking
    weights, exported in ONE process (legacy program format: FLAGS_enable_pir_api=0 before Paddle
    is imported, as Paddle Lite needs it)."""
    root = tmp_path_factory.mktemp("models_export")
    jobs, models = [], {}
    for name in NAMES:
        config, overrides = MODELS[name]
        models[name] = trained_like(name)
        weights = str(root / (name + ".pdparams"))
        paddle.save(models[name].state_dict(), weights)
        jobs.append((config, str(root / name), weights, overrides))
    code = ("import sys, ast\nfrom paddle_rtseg.exporting.static_graph import export\n"
            "for c, d, w, overrides in ast.literal_eval(sys.argv[1]):\n"
            "    export(c, d, w, output_op='none', fmt='legacy', model_overrides=overrides)\n")
    proc = subprocess.run([sys.executable, "-c", code, repr(jobs)], capture_output=True, text=True,
                          env=dict(os.environ, FLAGS_enable_pir_api="0"), timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: (models[name], str(root / name)) for name in NAMES}


@pytest.fixture(scope="module", params=NAMES)
def exported(request, exports, tmp_path_factory):
    """(name, dygraph model, export folder, onnx path, predictors) of one model."""
    name = request.param
    model, save_dir = exports[name]
    onnx_path = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    nb_path = du.convert_lite(save_dir, os.path.join(save_dir, "model_x86"), target="x86")
    predictors = [du.PaddleInferencePredictor(save_dir, use_mkldnn=True),
                  du.PaddleInferencePredictor(save_dir, use_mkldnn=False)]
    if du.openvino_available():  # Paddle 3.0's OpenVINO engine (not 2.6)
        predictors.append(du.PaddleInferencePredictor(save_dir, use_openvino=True))
    predictors += [du.OnnxPredictor(onnx_path), du.LitePredictor(nb_path)]
    return name, model, save_dir, onnx_path, predictors


def test_program_is_dynamic_and_deployable(exported):
    from paddle_rtseg_runtime.program import read_program
    name, model, save_dir = exported[:3]
    with open(os.path.join(save_dir, "deploy.yaml")) as f:
        info = yaml.safe_load(f)["Deploy"]
    assert info["input_shape"] == [-1, 3, -1, -1] and info["output_op"] == "none"
    program = read_program(du.model_paths(save_dir)[0])
    assert len(program.blocks) == 1  # no control flow
    types = set()
    for op in program.blocks[0].ops:
        types.add(op.type)
        if op.type == "flatten_contiguous_range":  # else Lite's opt crashes
            assert any(o.parameter == "XShape" for o in op.outputs)
        if op.type == "fill_constant" and not any(i.arguments for i in op.inputs):
            shape = [a for a in op.attrs if a.name == "shape"][0]
            assert list(shape.longs) or list(shape.ints)  # no 0-D constant (Lite aborts)
    assert not BANNED_OPS & types, sorted(BANNED_OPS & types)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backends_match_dygraph(exported, shape):
    name, model, _, _, predictors = exported
    x = np.random.RandomState(1).randn(*shape).astype("float32")
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x))[0].numpy()
    for predictor in predictors:
        out = predictor(x)
        assert out.shape == ref.shape, predictor.name
        error = relative_error(out, ref)
        assert error < RTOL_EXCEPTIONS.get((name, predictor.name), RTOL), (predictor.name, error)
        if name in ARGMAX_EQUAL:
            assert (out.argmax(1) == ref.argmax(1)).all(), predictor.name


def test_onnx_layer_norms_are_single_nodes(exported):
    """Opset 17 (the default): every LayerNorm is one LayerNormalization node; at 13 paddle2onnx
    writes nine ops each, some of which ONNX Runtime then fails to fuse back."""
    name, model, _, onnx_path, _ = exported
    layer_norms = sum(isinstance(layer, paddle.nn.LayerNorm) for layer in model.sublayers())
    node_types = [node.op_type for node in onnx.load(onnx_path).graph.node]
    assert node_types.count("LayerNormalization") == layer_norms


def test_onnx_graph_is_tidy(exported):
    """``convert_onnx`` without paddle2onnx's constant folding: weights are initializers (no
    ``Constant`` nodes), every node's output and every initializer is read (ONNX Runtime would
    warn once per unread one)."""
    onnx_path = exported[3]
    graph = onnx.load(onnx_path).graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    assert not [n.name for n in graph.node if n.op_type == "Constant"]
    assert all(any(o in read for o in node.output) for node in graph.node)
    assert graph.initializer and all(init.name in read for init in graph.initializer)


def test_lite_arm_supports_every_op(exported):
    name, _, save_dir = exported[:3]
    ops, supported = du.lite_model_ops(save_dir, target="arm")
    assert supported
    assert EXPECTED_OPS[name] <= set(ops)  # the table was parsed
    assert [op for op, kernels in ops.items() if not kernels] == []
    assert not BANNED_OPS & set(ops)
    nb = du.convert_lite(save_dir, os.path.join(save_dir, "model_arm"), target="arm")
    assert os.path.getsize(nb) > 0


def test_opset_speed_script_converts_and_compares(exports):
    """``scripts/onnx_opset_speed.py`` on SegFormer++ (2x2): both opsets and the constant-folded
    conversion agree; at 17 no layer_norm is left unfused (ReduceMean) in ONNX Runtime's graph, at
    13 some are (the reason 17 is the default), with or without paddle2onnx's folding."""
    model_dir = exports["segformer_pp"][1]
    script = os.path.join(ROOT, "scripts", "onnx_opset_speed.py")
    proc = subprocess.run([sys.executable, script, "--model_dir", model_dir, "--shape", "1", "3",
                           "64", "64", "--repeats", "1", "--threads", "1", "--fold_constants"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    differences = re.findall(r"max \|difference\| to opset 13 (\S+)", proc.stdout)
    assert len(differences) == 3 and max(map(float, differences)) < 1e-4, proc.stdout
    unfused = dict(re.findall(r"^(opset \d+(?: folded)?) .*ReduceMean nodes after ORT's fusions: "
                              r"(\d+)", proc.stdout, re.M))
    assert int(unfused["opset 17"]) == int(unfused["opset 17 folded"]) == 0 < int(
        unfused["opset 13"]), proc.stdout
    seconds = dict(re.findall(r"^(opset \d+(?: folded)?) .*converted in ([0-9.]+) s", proc.stdout,
                              re.M))
    assert len(seconds) == 3, proc.stdout
    proc = subprocess.run([sys.executable, script, "--model_dir", os.path.join(model_dir, "no")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr, proc.stderr
