"""SeaFormer exports to static graphs (PIR and legacy) that equal dygraph at several input sizes, and
Paddle Lite's opt accepts every op for ARM (no linear_interp_v2: the positional embedding is
resampled with bilinear_interp_v2, see paddle_rtseg/layers/axial_position.py)."""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITE_OPT = os.path.join(os.path.dirname(sys.executable), "paddle_lite_opt")

# Runs in a fresh interpreter: FLAGS_enable_pir_api must be set before paddle is imported.
SCRIPT = r"""
import json, sys
import numpy as np
import paddle
sys.path.insert(0, {tests!r})
from conftest import randomize_state
import paddle_rtseg
from paddle_rtseg.models import seaformer as S
from test_seaformer import mini_model, variant_model

variant, prefix, input_shape, sizes = {variant!r}, {prefix!r}, {input_shape!r}, {sizes!r}
if variant == "mini":
    model = mini_model()
    randomize_state(model, seed=0)
else:  # default init, with the zero-initialised BN scales switched on (random values on the deep
    model = variant_model(variant)  # real variants underflow to slow denormals)
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.set_value((1 + 0.1 * rng.normal(size=p.shape)).astype("float32"))
model.eval()
spec = [paddle.static.InputSpec(input_shape, "float32", "x")]
paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix)
exported = paddle.jit.load(prefix)
exported.eval()
diffs = []
for size in sizes:
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=size).astype("float32"))
    with paddle.no_grad():
        expected = model(x)[0].numpy()
        got = exported(x)
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    diffs.append(float(np.abs(got - expected).max()))
print("RESULT", json.dumps(diffs))
"""


def export(tmp_path, variant, legacy, input_shape, sizes):
    prefix = str(tmp_path / ("legacy" if legacy else "pir") / "model")
    code = SCRIPT.format(tests=os.path.join(ROOT, "tests"), variant=variant, prefix=prefix,
                         input_shape=list(input_shape), sizes=[list(s) for s in sizes])
    env = dict(os.environ, FLAGS_enable_pir_api="0" if legacy else "1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(re.search(r"RESULT (.*)", out.stdout).group(1))
    return prefix, diffs


def lite_ops(prefix):
    """paddle_lite_opt's op table for ARM: ``({op: (arm, host)}, full output)``."""
    out = subprocess.run([LITE_OPT, "--valid_targets=arm", "--print_model_ops=true",
                          "--model_file=" + prefix + ".pdmodel",
                          "--param_file=" + prefix + ".pdiparams"],
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    ops = {m.group(1): m.group(2) for m in
           re.finditer(r"^\s+(\w+)\s+(Y?\s*Y?)\s*$", text, flags=re.M)}
    return ops, text


def check_variant(tmp_path, variant, sizes):
    dynamic = [None, 3, None, None]
    legacy, legacy_diffs = export(tmp_path, variant, True, dynamic, sizes)
    assert max(legacy_diffs) < 1e-4, legacy_diffs
    ops, text = lite_ops(legacy)
    assert "Paddle-Lite supports this model!" in text, text[-3000:]
    assert ops and "linear_interp_v2" not in ops and "unique" not in ops and "set_value" not in ops
    print(variant, "Lite ARM ops:", " ".join(sorted(ops)))

    pir, pir_diffs = export(tmp_path, variant, False, dynamic, sizes)
    assert max(pir_diffs) < 1e-4, pir_diffs
    with open(pir + ".json") as f:
        graph = f.read()
    ops = set(re.findall(r'"\d+\.(\w+)"', graph))  # PIR op names such as "1.bilinear_interp"
    assert "bilinear_interp" in ops and not {"linear_interp", "unique", "set_value"} & ops


def test_mini_exports_with_dynamic_shapes(tmp_path):
    # 40x56 has 1x1 features at 1/64 (length-1 positional embeddings: the run-time branch)
    check_variant(tmp_path, "mini", [(1, 3, 64, 64), (2, 3, 150, 94), (1, 3, 40, 56)])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny", "small", "base", "large"])
def test_variant_exports_and_lite_supports_every_op(tmp_path, variant):
    check_variant(tmp_path, variant, [(1, 3, 128, 192), (1, 3, 40, 56)])


@pytest.mark.slow
def test_fixed_shape_export_has_no_shape_ops(tmp_path):
    legacy, diffs = export(tmp_path, "tiny", True, [1, 3, 512, 512], [(1, 3, 512, 512)])
    assert diffs[0] < 1e-4
    ops, text = lite_ops(legacy)
    assert "Paddle-Lite supports this model!" in text
    assert not {"shape", "where", "slice", "linear_interp_v2"} & set(ops), sorted(ops)


def spatial_broadcasts(pdmodel):
    """``(op, X dims, Y dims)`` of every element-wise op of a legacy program whose operands differ
    in H or W (one of them broadcast over a spatial axis)."""
    sys.path.insert(0, ROOT)
    from paddle_rtseg_runtime.program import read_program
    found = []
    for block in read_program(pdmodel).blocks:
        dims = {v.name: list(getattr(v.type, field).tensor.dims) for v in block.vars
                for field in ("dense_tensor", "lod_tensor")  # Paddle 3.0 / 2.6 name
                if field in type(v.type).DESCRIPTOR.fields_by_name and v.type.HasField(field)}
        for op in block.ops:
            if not op.type.startswith("elementwise_"):
                continue
            args = {a.parameter: a.arguments[0] for a in op.inputs if a.arguments}
            x, y = dims.get(args.get("X")), dims.get(args.get("Y"))
            if x and y and len(x) == len(y) == 4 and (x[2:] != y[2:]) and 1 not in (x[2] * x[3],
                                                                                    y[2] * y[3]):
                found.append((op.type, x, y))
    return found


def test_exported_adds_do_not_broadcast_over_a_spatial_axis(tmp_path):
    # Paddle Inference's oneDNN runs (B,C,H,W) + (B,C,H,1) with its reference kernel (many times
    # slower); the exported graph repeats the row/column attention outputs first (shape.py)
    legacy, diffs = export(tmp_path, "mini", True, [1, 3, 128, 192], [(1, 3, 128, 192)])
    assert diffs[0] < 1e-4
    assert spatial_broadcasts(legacy + ".pdmodel") == []
