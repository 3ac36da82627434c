"""`python -m paddle_rtseg.export`: PaddleSeg's deploy.yaml, dynamic shapes by default, both program
formats, a Lite-loadable legacy program, atomic output and one-paragraph errors."""
import os

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_module
import paddle_rtseg_runtime as du
from paddle_rtseg.exporting.static_graph import ExportError, export

CONFIG = os.path.join(ROOT, "configs", "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
TINY = ["model.base_channels=8", "model.head_channels=16", "model.spp_channels=16",
        "model.num_heads=4"]


@pytest.fixture(scope="module")
def argmax_export(tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp("export") / "argmax")
    proc = run_module("paddle_rtseg.export", "--config", CONFIG, "--save_dir", save_dir,
                      "--opts", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return save_dir


def test_deploy_yaml_in_paddleseg_format(argmax_export):
    with open(os.path.join(argmax_export, "deploy.yaml")) as f:
        info = yaml.safe_load(f)["Deploy"]
    assert info["model"] == "model.pdmodel" and info["params"] == "model.pdiparams"
    assert info["input_shape"] == [-1, 3, -1, -1]
    assert info["output_op"] == "argmax" and info["output_dtype"] == "int32"
    assert info["transforms"] == [{"type": "Normalize", "mean": [0.485, 0.456, 0.406],
                                   "std": [0.229, 0.224, 0.225]}]
    parent = os.path.dirname(argmax_export)
    assert not [n for n in os.listdir(parent) if n.startswith(".export-")]  # temp dir gone


def test_conv_biases_are_channel_adds_that_onednn_fuses(argmax_export):
    """Every conv bias is a 1-D parameter added on axis 1 (not Paddle 3's reshape2 + axis=-1 add,
    which oneDNN's conv_bias_onednn_fuse_pass rejects), and Paddle Inference fuses all of them."""
    import paddle.inference as pi
    from paddle_rtseg_runtime.program import read_program
    ops = read_program(os.path.join(argmax_export, "model.pdmodel")).blocks[0].ops
    made_by = {a: op.type for op in ops for o in op.outputs for a in o.arguments}
    conv_adds = [op for op in ops if op.type == "elementwise_add" and made_by.get(
        [i for i in op.inputs if i.parameter == "X"][0].arguments[0]) in ("conv2d",
                                                                         "depthwise_conv2d")]
    biased = [op for op in conv_adds if made_by.get(
        [i for i in op.inputs if i.parameter == "Y"][0].arguments[0]) is None]
    assert len(biased) >= 5, len(biased)  # the tiny RTFormer's biased convs
    assert all([a.i for a in op.attrs if a.name == "axis"] == [1] for op in biased)
    assert not [op for op in conv_adds if made_by.get(
        [i for i in op.inputs if i.parameter == "Y"][0].arguments[0]) == "reshape2"]
    out = str(os.path.join(os.path.dirname(argmax_export), "optimized"))
    config = pi.Config(*du.model_paths(argmax_export))
    config.disable_gpu()
    config.enable_mkldnn()
    config.enable_save_optim_model(True)
    config.set_optim_cache_dir(out)
    config.disable_glog_info()
    pi.create_predictor(config)
    block = read_program(os.path.join(out, "_optimized.pdmodel")).blocks[0]
    persistable = {v.name for v in block.vars if v.persistable}
    unfused = [op for op in block.ops if op.type == "elementwise_add" and any(
        a in persistable for i in op.inputs for a in i.arguments)]
    assert unfused == []  # every bias add went into its fused_conv2d


def test_dappm_pools_are_depthwise_convs_without_pad_ops(argmax_export):
    """DAPPM's zero-padded average pools are exported as depth-wise convs with a constant 1/k^2
    filter (no unsqueeze2 + pad3d + squeeze2, which Paddle Inference runs outside oneDNN)."""
    from paddle_rtseg_runtime.program import read_program
    block = read_program(os.path.join(argmax_export, "model.pdmodel")).blocks[0]
    types = [op.type for op in block.ops]
    assert "pad3d" not in types and "pad" not in types
    dims = {v.name: list(v.type.dense_tensor.tensor.dims) for v in block.vars
            if v.type.HasField("dense_tensor")}
    filters = [dims[i.arguments[0]] for op in block.ops if op.type == "depthwise_conv2d"
               for i in op.inputs if i.parameter == "Filter"]
    kernels = sorted(f[2] for f in filters)
    assert [k for k in kernels if k > 3] == [5, 9, 17], kernels


def test_argmax_export_takes_any_batch_and_size(argmax_export):
    predictor = du.PaddleInferencePredictor(argmax_export)
    for shape in [(1, 3, 64, 64), (3, 3, 45, 77)]:
        out = predictor(np.random.rand(*shape).astype("float32"))
        assert out.shape == (shape[0],) + shape[2:] and out.dtype == np.int32
        assert 0 <= out.min() and out.max() < 5


def test_legacy_program_is_lite_loadable(argmax_export):
    """No control flow, no 0-D fill_constant, flatten ops declare XShape (else Lite opt crashes)."""
    from paddle.base.proto import framework_pb2
    program = framework_pb2.ProgramDesc()
    with open(os.path.join(argmax_export, "model.pdmodel"), "rb") as f:
        program.ParseFromString(f.read())
    assert len(program.blocks) == 1
    for op in program.blocks[0].ops:
        if op.type == "flatten_contiguous_range":
            assert any(o.parameter == "XShape" for o in op.outputs)
        if op.type == "fill_constant" and not any(i.arguments for i in op.inputs):
            shape = [a for a in op.attrs if a.name == "shape"][0]
            assert list(shape.longs) or list(shape.ints)


def test_pir_format(tmp_path):
    save_dir = str(tmp_path / "pir")
    export(CONFIG, save_dir, output_op="softmax", fmt="pir", opts=TINY, input_shape=[1, 3, 64, 64])
    with open(os.path.join(save_dir, "deploy.yaml")) as f:
        info = yaml.safe_load(f)["Deploy"]
    assert info["model"] == "model.json" and info["input_shape"] == [1, 3, 64, 64]
    assert os.path.isfile(os.path.join(save_dir, "model.json"))
    # the structural check the predictors run before Paddle's loader accepts a real PIR export
    assert du.model_dir.check_program_files(os.path.join(save_dir, "model.json"),
                                            os.path.join(save_dir, "model.pdiparams")) > 10
    with pytest.raises(du.DeployError, match="--format legacy"):
        du.convert_lite(save_dir, str(tmp_path / "m"), "arm")


def test_cli_unknown_output_op_is_one_clear_line(tmp_path):
    proc = run_module("paddle_rtseg.export", "--config", CONFIG, "--save_dir", tmp_path / "x",
                      "--output_op", "sigmoid")
    assert proc.returncode == 2
    assert "Unknown --output_op 'sigmoid': use one of argmax, softmax, none" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_shape_the_model_cannot_take(tmp_path):
    with pytest.raises(ExportError, match=r"pass --input_shape N 3 H W"):
        export(CONFIG, str(tmp_path / "x"), input_shape=[1, 4, 64, 64], opts=TINY)
    with pytest.raises(ExportError, match="4 numbers N C H W"):
        export(CONFIG, str(tmp_path / "x"), input_shape=[1, 3, 64])
    assert not (tmp_path / "x").exists()


def test_missing_weights_and_unwritable_dir(tmp_path):
    with pytest.raises(ExportError, match="--model_path .*missing.pdparams does not exist"):
        export(CONFIG, str(tmp_path / "x"), model_path=str(tmp_path / "missing.pdparams"))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="Cannot create the parent of --save_dir"):
        export(CONFIG, str(blocker / "sub" / "out"))


def test_reexport_replaces_the_whole_export(argmax_export):
    """Re-exporting into an existing directory replaces the old export as a whole: no model file,
    params file or converted artefact (model.onnx, .nb, recorded by the converters) of the old
    export survives beside it; files the project did not write stay (issue 25, class 7)."""
    from paddle_rtseg_runtime.outputs import record
    stale = os.path.join(argmax_export, "model.onnx")
    with open(stale, "w") as f:
        f.write("converted from the previous export")
    record(stale)  # what convert_onnx does after paddle2onnx wrote it
    notes = os.path.join(argmax_export, "notes.txt")
    with open(notes, "w") as f:
        f.write("the user's own file")
    export(CONFIG, argmax_export, output_op="none", opts=TINY)
    with open(os.path.join(argmax_export, "deploy.yaml")) as f:
        assert yaml.safe_load(f)["Deploy"]["output_op"] == "none"
    assert not os.path.exists(stale)
    with open(notes) as f:
        assert f.read() == "the user's own file"
    parent = os.path.dirname(argmax_export)
    assert not [n for n in os.listdir(parent) if n.startswith(".export")]
    out = du.PaddleInferencePredictor(argmax_export)(np.zeros((1, 3, 32, 32), "float32"))
    assert out.shape == (1, 5, 32, 32)


def test_export_removes_temporaries_of_a_killed_export(tmp_path):
    """A killed export leaves its temporary folders next to --save_dir; the next export into that
    folder (which holds its lock, so no live export of it can own them) removes them, and only
    them."""
    save_dir = str(tmp_path / "x")
    stale = [tmp_path / ".export-x.abcd_123", tmp_path / ".export-old-x.zzzzzzzz"]
    foreign = tmp_path / ".export-x2.abcdefgh"  # another folder's export: may be running
    for folder in stale + [foreign]:
        folder.mkdir()
        (folder / "model.pdiparams").write_bytes(b"half")
    proc = run_module("paddle_rtseg.export", "--config", CONFIG, "--save_dir", save_dir,
                      "--input_shape", 1, 3, 64, 64, "--opts", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removed 2 temporary folder(s) left next to {}".format(save_dir) in proc.stderr
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [foreign.name]
    files = os.listdir(save_dir)
    assert {"deploy.yaml", "model.pdiparams", "model.pdmodel"} <= set(files)
    assert [n for n in files if n.startswith(".")] == [".paddle_rtseg_files"]  # no lock left
