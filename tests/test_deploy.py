"""Deployment beyond the conformance suite (every model's dynamic export on every backend and Lite
ARM's op support are tests/test_models_export.py): a tiny RTFormer's full-resolution and
fixed-shape exports pooling exactly on every backend (Paddle Inference with oneDNN on and off, its
OpenVINO engine, ONNX Runtime, Paddle Lite x86), the runners' CLIs and their errors, PaddleSeg's
mask files."""
import os
import sys

import cv2
import numpy as np
import paddle
import pytest

from conftest import ROOT, randomize_state, run_module
from test_models import FAMILIES, RTFORMER_TINY, relative_error  # noqa: F401  (test_arm's)
from paddle_rtseg import build_model
import paddle_rtseg_runtime as du

CONFIG = os.path.join(ROOT, "configs", "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
# the tiny models (one table, tests/test_models.py; FAMILIES also drives tests/test_arm.py). Every
# model's dynamic export against dygraph on every backend, and Lite ARM's op support, are the
# conformance suite's (tests/test_models_export.py); here: RTFormer's fixed-shape pooling, the
# runners and their errors.
TINY = RTFORMER_TINY
RTOL = 1e-4


def tiny_opts(overrides=TINY):
    return ["model.{}={}".format(k, v) for k, v in overrides.items()]


@pytest.fixture(scope="module", params=["rtformer"])
def exported(request, tmp_path_factory):
    """(dygraph model, export dir, onnx path, lite x86 .nb path) for the same weights."""
    config, overrides = FAMILIES[request.param]
    if not os.path.isfile(config):
        pytest.skip("{} has not landed".format(config))
    root = tmp_path_factory.mktemp("deploy_" + request.param)
    paddle.seed(0)
    model = build_model(config, **overrides)
    randomize_state(model)
    model.eval()
    weights = str(root / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    save_dir = str(root / "export")
    args = ["--opts", *tiny_opts(overrides)] if overrides else []
    proc = run_module("paddle_rtseg.export", "--config", config, "--model_path", weights,
                      "--save_dir", save_dir, "--output_op", "none", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the converters as the README runs them (deploy/onnx/convert.py, deploy/lite/convert.py)
    for script, *args in (("deploy/onnx/convert.py",), ("deploy/lite/convert.py", "--target", "x86")):
        proc = _run_script(script, "--model_dir", save_dir, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "opset 17 -> " in _run_script("deploy/onnx/convert.py", "--model_dir", save_dir,
                                        "--opset_version", 17).stdout  # the default, rewritten
    return model, save_dir, os.path.join(save_dir, "model.onnx"), os.path.join(save_dir,
                                                                              "model_x86.nb")


@pytest.fixture(scope="module")
def predictors(exported):
    _, save_dir, onnx_path, nb_path = exported
    return [du.PaddleInferencePredictor(save_dir, use_mkldnn=True),
            du.PaddleInferencePredictor(save_dir, use_mkldnn=False),
            *openvino_predictors(save_dir),
            du.OnnxPredictor(onnx_path),
            du.LitePredictor(nb_path)]


def openvino_predictors(save_dir):
    """Paddle Inference's OpenVINO engine, where this Paddle has it (3.0; not 2.6)."""
    return [du.PaddleInferencePredictor(save_dir, use_openvino=True)] \
        if du.openvino_available() else []


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_backends_match_dygraph_at_1024x2048(exported, predictors):
    """Cityscapes full resolution: the 32x64 map pooled to 12x12 bins of unequal size, exact."""
    model = exported[0]
    x = np.random.RandomState(2).randn(1, 3, 1024, 2048).astype("float32")
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x))[0].numpy()
    for predictor in predictors:
        assert relative_error(predictor(x), ref) < RTOL, predictor.name


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_fixed_shape_export_pools_exactly_on_every_backend(exported, tmp_path):
    """``--input_shape`` export, where the pool's sizes are Python ints at trace time (the runtime
    shape path is covered by the dynamic export above). 416x544 gives a 13x17 map at 1/32, pooled
    to 12x12 bins of unequal length."""
    model = exported[0]
    weights = str(tmp_path / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    save_dir = str(tmp_path / "export")
    proc = run_module("paddle_rtseg.export", "--config", CONFIG, "--model_path", weights,
                      "--save_dir", save_dir, "--output_op", "none", "--input_shape", "1", "3",
                      "416", "544", "--opts", *tiny_opts())
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.random.RandomState(3).randn(1, 3, 416, 544).astype("float32")
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x))[0].numpy()
    predictors = [du.PaddleInferencePredictor(save_dir, use_mkldnn=True),
                  du.PaddleInferencePredictor(save_dir, use_mkldnn=False),
                  *openvino_predictors(save_dir),
                  du.OnnxPredictor(du.convert_onnx(save_dir, str(tmp_path / "model.onnx"))),
                  du.LitePredictor(du.convert_lite(save_dir, str(tmp_path / "model_x86"), "x86"))]
    for predictor in predictors:
        assert relative_error(predictor(x), ref) < RTOL, predictor.name
    ops, supported = du.lite_model_ops(save_dir, target="arm")
    assert supported and "gather" in ops
    assert [op for op, kernels in ops.items() if not kernels] == []


def _write_images(folder, sizes, channels=3):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate(sizes):
        shape = (h, w) if channels == 1 else (h, w, channels)
        cv2.imwrite(os.path.join(folder, "im{}.png".format(i)),
                    rng.randint(0, 255, shape).astype("uint8"))
    return folder


def _run_script(path, *args):
    import subprocess
    return subprocess.run([sys.executable, os.path.join(ROOT, path), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_runners_write_the_same_masks(exported, tmp_path):
    _, save_dir, onnx_path, nb_path = exported
    images = _write_images(str(tmp_path / "images"), [(64, 64), (70, 90)])
    with open(os.path.join(images, "._im0.png"), "wb") as f:  # macOS metadata: skipped, not read
        f.write(b"\x00\x05\x16\x07")
    runs = {
        "paddle": ("deploy/python/infer.py", "--model_dir", save_dir),
        "onnx": ("deploy/onnx/infer.py", "--model_dir", save_dir, "--onnx_file", onnx_path),
        "lite": ("deploy/lite/infer.py", "--model_dir", save_dir, "--nb_file", nb_path),
    }
    if du.openvino_available():
        runs["openvino"] = ("deploy/python/infer.py", "--model_dir", save_dir, "--use_openvino")
    masks = {}
    for name, (script, *args) in runs.items():
        out = tmp_path / name
        proc = _run_script(script, *args, "--image_path", images, "--save_dir", out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        masks[name] = [np.array(__import__("PIL.Image").Image.open(out / "im{}.png".format(i)))
                       for i in range(2)]
        assert (out / "im1_overlay.jpg").exists()
    assert masks["paddle"][1].shape == (70, 90)
    for name in set(runs) - {"paddle"}:
        for a, b in zip(masks["paddle"], masks[name]):
            assert (a != b).mean() < 1e-3, name


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_runner_converts_grayscale_with_a_warning(exported, tmp_path):
    """The CLIs' image rule (README, "Command line"): grayscale is replicated to 3 channels."""
    images = _write_images(str(tmp_path / "gray"), [(40, 40)], channels=1)
    proc = _run_script("deploy/python/infer.py", "--model_dir", exported[1], "--image_path",
                       images, "--save_dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "im0.png is grayscale; replicating it to 3 channels" in proc.stderr
    assert (tmp_path / "out" / "im0.png").exists()


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_runner_rejects_incomplete_model_dir(exported, tmp_path):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    with open(os.path.join(exported[1], "deploy.yaml")) as f:
        (incomplete / "deploy.yaml").write_text(f.read())
    with pytest.raises(du.DeployError, match="missing model.pdmodel, model.pdiparams"):
        du.read_deploy_yaml(str(incomplete))
    proc = _run_script("deploy/onnx/infer.py", "--model_dir", tmp_path / "nothing", "--onnx_file",
                       exported[2], "--image_path", tmp_path, "--save_dir", tmp_path / "out")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_onnx_converter_refuses_bad_input_before_writing(tmp_path):
    (tmp_path / "deploy.yaml").write_text("Deploy: {model: model.pdmodel}\n")
    for args, message in ((["--model_dir", tmp_path], "missing model.pdmodel"),
                          (["--model_dir", tmp_path / "none"], "does not exist")):
        proc = _run_script("deploy/onnx/convert.py", *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_onnx_and_lite_runners_take_a_folder_without_the_paddle_program(exported, tmp_path):
    """A device gets only deploy.yaml + model.onnx (or + model_x86.nb): enough for those runners;
    the masks equal those of the full export folder."""
    _, save_dir, onnx_path, nb_path = exported
    import shutil
    images = _write_images(str(tmp_path / "images"), [(64, 64)])
    runs = {"onnx": ("deploy/onnx/infer.py", onnx_path, "model.onnx"),
            "lite": ("deploy/lite/infer.py", nb_path, "model_x86.nb")}
    for name, (script, model_file, shipped_name) in runs.items():
        device = tmp_path / ("device_" + name)
        device.mkdir()
        shutil.copy(os.path.join(save_dir, "deploy.yaml"), device / "deploy.yaml")
        shutil.copy(model_file, device / shipped_name)
        proc = _run_script(script, "--model_dir", device, "--image_path", images,
                           "--save_dir", tmp_path / ("out_" + name))
        assert proc.returncode == 0, proc.stderr[-2000:]
        full = _run_script(script, "--model_dir", save_dir, "--{}_file".format(
            "onnx" if name == "onnx" else "nb"), model_file, "--image_path", images,
                           "--save_dir", tmp_path / ("full_" + name))
        assert full.returncode == 0, full.stderr[-2000:]
        assert (tmp_path / ("out_" + name) / "im0.png").read_bytes() == \
            (tmp_path / ("full_" + name) / "im0.png").read_bytes()
        os.remove(device / shipped_name)  # and without its own model file, a clear error
        proc = _run_script(script, "--model_dir", device, "--image_path", images,
                           "--save_dir", tmp_path / "x")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert shipped_name + " does not exist" in proc.stderr
    # the Paddle Inference runner does need the program
    proc = _run_script("deploy/python/infer.py", "--model_dir", tmp_path / "device_onnx",
                       "--image_path", images, "--save_dir", tmp_path / "x")
    assert proc.returncode == 2 and "missing model.pdmodel, model.pdiparams" in proc.stderr


def test_masks_and_overlays_are_paddlesegs(tmp_path):
    """The runners' and predict's files are PaddleSeg's: the pseudo-color PNG byte for byte as
    ``get_pseudo_color_map(...).save``, pixel values = class ids, PaddleSeg's palette (custom
    colours too), and the overlay of ``paddleseg.utils.visualize.visualize``."""
    import io

    from PIL import Image
    from paddleseg.utils import visualize
    label = np.random.RandomState(0).randint(0, 19, (37, 53)).astype("uint8")
    ours = du.pseudo_color_png(label)
    theirs = io.BytesIO()
    visualize.get_pseudo_color_map(label).save(theirs, format="PNG")
    assert ours == theirs.getvalue()
    mask = Image.open(io.BytesIO(ours))
    assert mask.mode == "P" and mask.getpalette() == visualize.get_color_map_list(256)
    np.testing.assert_array_equal(np.array(mask), label)
    custom = [10, 20, 30, 40, 50, 60]
    assert du.color_map(256, custom).flatten().tolist() == \
        visualize.get_color_map_list(256, custom_color=custom)
    image = np.random.RandomState(1).randint(0, 255, (37, 53, 3)).astype("uint8")
    cv2.imwrite(str(tmp_path / "im.png"), image)
    expected = visualize.visualize(str(tmp_path / "im.png"), label,
                                   visualize.get_color_map_list(256), weight=0.6)
    np.testing.assert_array_equal(du.overlay(image, label), expected)


@pytest.mark.parametrize("exported", ["rtformer"], indirect=True)
def test_onnx_converter_refuses_opset_below_13(exported, tmp_path):
    with pytest.raises(du.DeployError, match="use 13 or newer"):
        du.convert_onnx(exported[1], str(tmp_path / "m.onnx"), opset=11)


def test_input_shape_check():
    du.check_input(np.zeros((2, 3, 50, 70), "float32"), [-1, 3, -1, -1])
    with pytest.raises(du.DeployError, match="channels 4 != 3"):
        du.check_input(np.zeros((1, 4, 50, 70), "float32"), [-1, 3, -1, -1])
    with pytest.raises(du.DeployError, match="height 50 != 512"):
        du.check_input(np.zeros((1, 3, 50, 70), "float32"), [1, 3, 512, 512])


def test_onnx_predictor_flushes_denormals(tmp_path):
    """ONNX Runtime runs with denormals flushed to zero, like Paddle Inference (see OnnxPredictor):
    a product below 1.2e-38 comes out as 0. (Not compared with numpy in-process: ONNX Runtime
    leaves the calling thread in flush-to-zero mode, so numpy's products flush too.)"""
    import onnx
    from onnx import TensorProto, helper
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [1e-30])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y"])], "denormal",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              initializer=[scale])
    path = str(tmp_path / "denormal.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    x = np.array([[1e-10, 2e-10, 1.0]], "float32")  # products 1e-40 and 2e-40 are denormal
    y = du.OnnxPredictor(path)(x)
    assert y[0, 0] == 0 and y[0, 1] == 0 and y[0, 2] == np.float32(1e-30)


def test_runners_and_clis_read_16bit_images_alike(tmp_path):
    """One rule for 16-bit input (scale by the maximum), so `predict` and the deploy runners see
    the same pixels; min-max scaling (the runners' old rule) would map 1000 to 0 here."""
    from paddle_rtseg.datasets import checked_io
    image = (np.arange(40 * 36 * 3).reshape(40, 36, 3) * 5 + 1000).astype(np.uint16)
    path = str(tmp_path / "deep.png")
    cv2.imwrite(path, image)
    runner, cli = du.read_image(path), checked_io.read_image(path)
    assert runner.dtype == np.uint8
    np.testing.assert_array_equal(runner.astype("float32"), cli)
    expected = np.clip(np.rint(image * (255.0 / image.max())), 0, 255).astype(np.uint8)
    assert np.abs(runner.astype(int) - expected).max() <= 1
    assert runner.min() == expected.min() > 0
