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
from paddle_rtseg.exporting.static_graph import tracing_without_source_lookups


def export_and_compare(variant, prefix, input_shape, sizes):
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
    inputs = [paddle.to_tensor(np.random.default_rng(0).normal(size=size).astype("float32"))
              for size in sizes]
    with paddle.no_grad():  # dygraph first: to_static turns model.forward into the traced program
        expected = [model(x)[0].numpy() for x in inputs]
    spec = [paddle.static.InputSpec(input_shape, "float32", "x")]
    with tracing_without_source_lookups():
        paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix)
    exported = paddle.jit.load(prefix)
    exported.eval()
    diffs = []
    for x, want in zip(inputs, expected):
        got = exported(x)
        got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
        diffs.append(float(np.abs(got - want).max()))
    return diffs


results = {{}}
for variant, prefix, input_shape, sizes in {jobs!r}:
    results[variant] = export_and_compare(variant, prefix, input_shape, sizes)
print("RESULT", json.dumps(results))
"""


def export_many(tmp_path, jobs, legacy):
    """``{variant: (prefix, max |exported - dygraph| per size)}`` for ``jobs`` (variant, input
    shape, sizes), all traced in ONE fresh interpreter (legacy program or PIR)."""
    fmt = "legacy" if legacy else "pir"
    jobs = [(variant, str(tmp_path / variant / fmt / "model"), list(shape), [list(s) for s in sizes])
            for variant, shape, sizes in jobs]
    code = SCRIPT.format(tests=os.path.join(ROOT, "tests"), jobs=jobs)
    env = dict(os.environ, FLAGS_enable_pir_api="0" if legacy else "1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(re.search(r"RESULT (.*)", out.stdout).group(1))
    return {variant: (prefix, diffs[variant]) for variant, prefix, _, _ in jobs}


def export(tmp_path, variant, legacy, input_shape, sizes):
    return export_many(tmp_path, [(variant, input_shape, sizes)], legacy)[variant]


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


DYNAMIC = [None, 3, None, None]


def check_exports(legacy, pir, variant):
    """The legacy export equals dygraph and Lite has an ARM kernel for each of its ops; the PIR
    export equals dygraph and resamples with bilinear_interp (no linear_interp, unique, set_value)."""
    (legacy, legacy_diffs), (pir, pir_diffs) = legacy, pir
    assert max(legacy_diffs) < 1e-4, legacy_diffs
    ops, text = lite_ops(legacy)
    assert "Paddle-Lite supports this model!" in text, text[-3000:]
    assert ops and "linear_interp_v2" not in ops and "unique" not in ops and "set_value" not in ops
    print(variant, "Lite ARM ops:", " ".join(sorted(ops)))
    assert max(pir_diffs) < 1e-4, pir_diffs
    with open(pir + ".json") as f:
        graph = f.read()
    ops = set(re.findall(r'"\d+\.(\w+)"', graph))  # PIR op names such as "1.bilinear_interp"
    assert "bilinear_interp" in ops and not {"linear_interp", "unique", "set_value"} & ops


def test_mini_exports_with_dynamic_shapes(tmp_path):
    # 40x56 has 1x1 features at 1/64 (length-1 positional embeddings: the run-time branch)
    job = [("mini", DYNAMIC, [(1, 3, 64, 64), (2, 3, 150, 94), (1, 3, 40, 56)])]
    check_exports(export_many(tmp_path, job, True)["mini"], export_many(tmp_path, job, False)["mini"],
                  "mini")


VARIANTS = ["tiny", "small", "base", "large"]


@pytest.fixture(scope="module")
def variant_exports(tmp_path_factory):
    """Every real variant exported at dynamic shapes, legacy and PIR (one interpreter each)."""
    root = tmp_path_factory.mktemp("seaformer_variants")
    jobs = [(variant, DYNAMIC, [(1, 3, 128, 192), (1, 3, 40, 56)]) for variant in VARIANTS]
    return export_many(root, jobs, True), export_many(root, jobs, False)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_exports_and_lite_supports_every_op(variant_exports, variant):
    legacy, pir = variant_exports
    check_exports(legacy[variant], pir[variant], variant)


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
