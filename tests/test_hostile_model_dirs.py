"""A model folder is untrusted input: deploy.yaml paths that leave the folder (generated spellings,
symbolic links), ONNX external data outside the folder, and deploy.yaml fields of the wrong type or
range (generated corruptions of a valid file) are refused in one paragraph before any runtime
opens a file."""
import json
import os

import numpy as np
import pytest
import yaml

from paddle_rtseg_runtime import DeployError, OnnxPredictor
from paddle_rtseg_runtime.model_dir import model_paths, read_deploy_yaml

VALID = {"model": "model.pdmodel", "params": "model.pdiparams",
         "transforms": [{"type": "Resize", "target_size": [64, 32]},
                        {"type": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}],
         "input_shape": [-1, 3, -1, -1], "output_op": "argmax"}


def model_dir(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.pdmodel", "model.pdiparams"):
        (folder / name).write_bytes(b"x")
    with open(str(folder / "deploy.yaml"), "w") as f:
        yaml.safe_dump({"Deploy": dict(VALID, **changes)}, f)
    return str(folder)


def test_paths_that_leave_the_folder_are_refused(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"secret")
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.pdiparams").write_bytes(b"x")
    os.symlink(str(outside), str(tmp_path / "link-target"))
    inside = {"model.pdmodel", "./model.pdmodel", "sub/w.pdiparams", "sub/../model.pdmodel"}
    leaving = ["../secret.bin", str(outside), "sub/../../secret.bin", "../../../../etc/passwd",
               "/etc/passwd", "link.pdmodel", "sub/../../m/../secret.bin"]
    outcomes = {"inside": 0, "refused": 0}
    for name in sorted(inside) + leaving:
        path = model_dir(folder, params=name)
        if name == "link.pdmodel":
            if not (folder / "link.pdmodel").exists():
                os.symlink(str(outside), str(folder / "link.pdmodel"))
        if name in inside:
            assert model_paths(path)[1] == os.path.join(path, name)
            outcomes["inside"] += 1
        else:
            with pytest.raises(DeployError, match="outside the model folder"):
                read_deploy_yaml(path, program_files=False)
            outcomes["refused"] += 1
    assert outcomes == {"inside": len(inside), "refused": len(leaving)}


CORRUPTIONS = {
    "model": [5, None, "", ["a"], "a\0b"],
    "params": [5, ["a"], {"a": 1}],
    "transforms": ["Normalize", [1], [{"type": "Sharpen"}], [{"type": "Resize", "target_size": 512}],
                   [{"type": "Resize", "target_size": [100000, 100000]}],
                   [{"type": "Resize", "target_size": [64, -1]}],
                   [{"type": "Resize", "target_size": [64, 64], "size_divisor": 0}],
                   [{"type": "Normalize", "mean": [0.5, 0.5]}],
                   [{"type": "Normalize", "std": [0, 1, 1]}],
                   [{"type": "Normalize", "mean": ["a", 1, 1]}],
                   [{"type": "ResizeByLong", "long_size": "big"}],
                   [{"type": "Resize", "target_size": [64, 64], "interp": "MAGIC"}]],
    "input_shape": [[1, 3, 64], "1,3,64,64", [1, 3, 64, 0], [1, 3, 64, 10 ** 9], [1.5, 3, 64, 64],
                    [True, 3, 64, 64]],
    "output_op": ["sigmoid", 1, None, ["argmax"]],
}


@pytest.mark.parametrize("field", CORRUPTIONS)
def test_wrong_types_and_ranges_are_one_paragraph(tmp_path, field):
    for i, value in enumerate(CORRUPTIONS[field]):
        path = model_dir(tmp_path / str(i), **{field: value})
        with pytest.raises(DeployError) as err:
            read_deploy_yaml(path)
        message = str(err.value)
        assert "\n" not in message and len(message) < 1000, message
        assert (field if field != "model" else "model") in message, (value, message)


def test_yaml_tags_syntax_and_shape_of_deploy_yaml(tmp_path):
    marker = tmp_path / "ran"
    texts = {"tag": "Deploy: !!python/object/apply:os.system ['touch {}']\n".format(marker),
             "tag inside": "Deploy:\n  model: !!python/name:os.system\n",
             "syntax": "Deploy:\n  model: [model.pdmodel\n",
             "list": "- Deploy\n", "bomb": "a: &a [*a]\nDeploy: {model: model.pdmodel}\n",
             "no Deploy": "model: model.pdmodel\n"}
    for name, text in texts.items():
        folder = tmp_path / name.replace(" ", "_")
        model_dir(folder)
        (folder / "deploy.yaml").write_text(text)
        with pytest.raises(DeployError) as err:
            read_deploy_yaml(str(folder))
        assert "deploy.yaml" in str(err.value), (name, str(err.value))
    assert not marker.exists()
    assert read_deploy_yaml(model_dir(tmp_path / "ok"))["output_op"] == "argmax"


def _onnx_with_external_weight(folder, location):
    """A one-Add ONNX model whose constant operand is stored as external data at ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = str(folder / "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(4, 7, np.float32).tobytes())
    for location in ["../secret.bin", str(secret), "sub/../../secret.bin"]:
        path = _onnx_with_external_weight(tmp_path / "m", location)
        with pytest.raises(DeployError, match="outside the model folder"):
            OnnxPredictor(path)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    predictor = OnnxPredictor(_onnx_with_external_weight(tmp_path / "ok", "w.bin"))
    out = predictor.session.run(None, {"x": np.ones(4, np.float32)})[0]
    assert np.array_equal(out, np.arange(4) + 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(DeployError, match="cannot be read"):
        OnnxPredictor(str(tmp_path / "bad" / "model.onnx"))


def test_a_broken_pir_program_is_one_paragraph(tmp_path):
    """``--format pir`` folders (``model.json``): random bytes, truncated JSON and JSON that is not a
    program are refused before Paddle's loader sees them (the legacy ``.pdmodel`` has the same check)."""
    from paddle_rtseg_runtime.model_dir import check_program_files
    program = {"base_code": {"magic": "pir", "version": 1},
               "program": {"regions": [{"#": "region_0", "blocks": [{"#": "block_0", "args": [],
                                                                    "ops": [{"#": "p"}]}]}]}}
    text = json.dumps(program)
    params = tmp_path / "model.pdiparams"
    params.write_bytes(b"")
    cases = {"random": os.urandom(4096), "truncated": text[:len(text) // 2].encode(),
             "not a program": b'{"base_code": {}, "program": {"regions": []}}', "a list": b"[1, 2]",
             "no ops": text.replace('[{"#": "p"}]', "[]").encode(), "deep": b"[" * 100000}
    for name, data in cases.items():
        (tmp_path / "model.json").write_bytes(data)
        with pytest.raises(DeployError, match="is not a Paddle 3 \\(PIR\\) program") as e:
            check_program_files(str(tmp_path / "model.json"), str(params))
        assert "\n" not in str(e.value) and len(str(e.value)) < 400, name
    (tmp_path / "model.json").write_text(text)  # the structure passes; the empty params do not
    with pytest.raises(DeployError, match="not a Paddle parameters file: it holds no tensor"):
        check_program_files(str(tmp_path / "model.json"), str(params))


def test_a_missing_params_entry_is_one_paragraph(tmp_path):
    """deploy.yaml without ``params:`` (the Paddle program's weights): one paragraph for the Paddle
    runner, which needs it (it was a KeyError); the ONNX and Lite runners do not read it."""
    path = model_dir(tmp_path / "m")
    with open(os.path.join(path, "deploy.yaml")) as f:
        info = yaml.safe_load(f)
    del info["Deploy"]["params"]
    with open(os.path.join(path, "deploy.yaml"), "w") as f:
        yaml.safe_dump(info, f)
    with pytest.raises(DeployError, match="names no `params:` file"):
        model_paths(path)
    assert read_deploy_yaml(path, program_files=False)["model"] == "model.pdmodel"


@pytest.mark.parametrize("transform, size", [
    ({"type": "ResizeByLong", "long_size": 65535}, (128, 128)),
    ({"type": "ResizeByShort", "short_size": 4000}, (8, 8000)),  # a long strip: 4000 x 4 million
    ({"type": "Resize", "target_size": [60000, 60000], "keep_ratio": True}, (64, 64))])
def test_resizes_beyond_the_pixel_limit_are_refused_before_allocating(transform, size):
    """A deploy.yaml resize that would make an image of billions of pixels (cv2 then failed to
    allocate 51 GB) is refused with the limit's name before cv2 runs; within it, images resize."""
    from paddle_rtseg_runtime.transforms import preprocess
    image = np.zeros(size + (3,), np.uint8)
    with pytest.raises(DeployError, match="PADDLE_RTSEG_MAX_IMAGE_PIXELS") as err:
        preprocess(image, [transform])
    assert "\n" not in str(err.value)
    assert preprocess(np.zeros((128, 64, 3), np.uint8),
                      [{"type": "ResizeByLong", "long_size": 256}]).shape == (1, 3, 256, 128)


def test_an_onnx_file_runtime_cannot_load_is_one_paragraph(tmp_path):
    """An empty model.onnx, or a Paddle program passed as --onnx_file, parses (or nearly) but ONNX
    Runtime refuses it: a DeployError naming the file, not ORT's traceback."""
    for name, data in (("empty.onnx", b""), ("program.onnx", b"\x0a\x05hello\x12\x00")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DeployError, match="ONNX Runtime cannot load") as err:
            OnnxPredictor(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
