"""Bad input gets a one-paragraph error naming the problem and the fix, no stack trace."""
import errno
import glob
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml
from conftest import CONFIGS, ROOT, run_module, write_config

import paddle_rtseg_runtime as du
from paddle_rtseg.config import ConfigError, load_config
from paddle_rtseg.models import RTFormer

SLIM_SYNTHETIC = os.path.join(CONFIGS, "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
TINY = dict(base_channels=8, head_channels=16, num_heads=4)


def assert_clean_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert error, out.stderr[-2000:]
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, error)


@pytest.fixture
def config(tmp_path, synthetic_root):
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    return write_config(tmp_path / "tiny.yml", SLIM_SYNTHETIC, model=TINY, **datasets)


@pytest.fixture
def checkpoint(tmp_path):
    path = str(tmp_path / "model.pdparams")
    paddle.save(RTFormer(5, **TINY).state_dict(), path)
    return path


def train(tmp_path, config, *extra):
    return run_module("paddle_rtseg.train", "--config", config, "--iters", 1, "--save_dir",
                      tmp_path / "out", *extra, cwd=tmp_path)


def test_misspelled_top_level_key(tmp_path, config):
    bad = write_config(tmp_path / "bad.yml", config, trian_dataset={})
    assert_clean_error(train(tmp_path, bad), "Unknown top-level key 'trian_dataset'",
                       "Did you mean 'train_dataset'")


def test_unknown_model_type(tmp_path, config):
    bad = write_config(tmp_path / "bad.yml", config, model=dict(type="RTSeg_RTFromer"))
    assert_clean_error(train(tmp_path, bad), "Unknown type 'RTSeg_RTFromer' at model",
                       "'RTSeg_RTFormer'")


def test_unknown_model_argument(tmp_path, config):
    out = train(tmp_path, config, "--opts", "model.base_channel=16")
    assert_clean_error(out, "takes no argument 'base_channel'", "'base_channels'")


def test_checkpoint_for_other_num_classes(tmp_path, config):
    path = str(tmp_path / "other.pdparams")
    paddle.save(RTFormer(19, **TINY).state_dict(), path)
    out = run_module("paddle_rtseg.val", "--config", config, "--model_path", path, cwd=tmp_path)
    assert_clean_error(out, "seghead.conv2.weight checkpoint [19, 32, 1, 1] vs model [5, 32, 1, 1]",
                       "num_classes")


def _copy_dataset(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def _dataset_config(tmp_path, config, root, list_name="train.txt"):
    train_dataset = dict(type="Dataset", dataset_root=str(root), num_classes=5, mode="train",
                         train_path=str(root / list_name), transforms=[dict(type="Normalize")])
    val_dataset = dict(type="Dataset", dataset_root=str(root), num_classes=5, mode="val",
                       val_path=str(root / "val.txt"), transforms=[dict(type="Normalize")])
    return write_config(tmp_path / "ds.yml", config, train_dataset=train_dataset,
                        val_dataset=val_dataset)


def test_missing_list_file(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    out = train(tmp_path, _dataset_config(tmp_path, config, root, "missing.txt"))
    assert_clean_error(out, "missing.txt")


def test_missing_image(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    os.remove(root / "images" / "train_00003.jpg")
    out = train(tmp_path, _dataset_config(tmp_path, config, root))
    assert_clean_error(out, "1 file(s) that do not exist", "train_00003.jpg")


def test_corrupt_image(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    for i in range(64):
        (root / "images" / "train_{:05d}.jpg".format(i)).write_bytes(b"\xff\xd8 truncated")
    out = train(tmp_path, _dataset_config(tmp_path, config, root))
    assert_clean_error(out, "cannot be decoded", "train_000")


def test_colour_label(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    for i in range(64):
        path = str(root / "labels" / "train_{:05d}.png".format(i))
        cv2.imwrite(path, cv2.cvtColor(cv2.imread(path, 0) * 40, cv2.COLOR_GRAY2BGR))
    out = train(tmp_path, _dataset_config(tmp_path, config, root))
    assert_clean_error(out, "single-channel PNGs of class ids")


def test_corrupt_image_in_predict(tmp_path, config, checkpoint):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    out = run_module("paddle_rtseg.predict", "--config", config, "--model_path", checkpoint,
                     "--image_path", tmp_path / "broken.png", "--save_dir", tmp_path / "pred",
                     cwd=tmp_path)
    assert_clean_error(out, "broken.png cannot be decoded")
    assert not os.listdir(tmp_path / "pred")


@pytest.mark.skipif(os.geteuid() == 0 and os.path.exists("/proc/self"), reason="root ignores modes")
def test_unwritable_output_dir_permissions(tmp_path, config):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_clean_error(train(tmp_path, config, "--save_dir", locked / "out"), "Cannot write")


def test_unwritable_output_dir(tmp_path, config):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    out = run_module("paddle_rtseg.train", "--config", config, "--iters", 1, "--save_dir",
                     blocker / "out", cwd=tmp_path)
    assert_clean_error(out, "Cannot write to --save_dir", "file/out")


def test_missing_config_and_bad_opts(tmp_path, config):
    assert_clean_error(train(tmp_path, str(tmp_path / "nope.yml")), "does not exist")
    assert_clean_error(train(tmp_path, config, "--opts", "batch_size"), "key=value")


def test_incomplete_resume_checkpoint(tmp_path, config):
    (tmp_path / "out" / "iter_5").mkdir(parents=True)
    (tmp_path / "out" / "iter_5" / "model.pdparams").write_bytes(b"")
    out = train(tmp_path, config, "--resume_model", tmp_path / "out" / "iter_5")
    assert_clean_error(out, "is not a complete checkpoint")


def test_truncated_image_found_while_training_stops_the_run(tmp_path, config, synthetic_root):
    """A JPEG whose header is fine but whose body is cut off (OpenCV decodes it with a warning,
    filling the rest with grey) is refused when read, inside Paddle's loader thread; the run must
    stop with the message, not hang (Paddle's DataLoader waits forever otherwise)."""
    root = _copy_dataset(tmp_path, synthetic_root)
    for i in range(64):
        path = root / "images" / "train_{:05d}.jpg".format(i)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    out = run_module("paddle_rtseg.train", "--config", _dataset_config(tmp_path, config, root),
                     "--iters", 1, "--save_dir", tmp_path / "out", cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "the JPEG is truncated" in out.stderr and "images/train_000" in out.stderr
    assert not glob.glob(str(tmp_path / "out" / "iter_*"))
    assert not (tmp_path / "out" / du.run_lock.LOCK_NAME).exists()  # released (issue 25, class 4)


def test_truncated_label_found_before_training(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    path = root / "labels" / "train_00007.png"
    path.write_bytes(path.read_bytes()[:200])
    out = train(tmp_path, _dataset_config(tmp_path, config, root))
    assert_clean_error(out, "labels/train_00007.png cannot be decoded")


def test_predict_list_with_outside_entries_writes_inside_save_dir(tmp_path, config, checkpoint,
                                                                  synthetic_root):
    lists = tmp_path / "lists"
    lists.mkdir()
    image = os.path.join(synthetic_root, "images", "val_00002.jpg")
    (lists / "l.txt").write_text(image + "\n")
    out = run_module("paddle_rtseg.predict", "--config", config, "--model_path", checkpoint,
                     "--image_path", lists / "l.txt", "--save_dir", tmp_path / "pred", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.listdir(tmp_path / "pred" / "added_prediction") == ["val_00002.jpg"]
    assert os.listdir(tmp_path / "pred" / "pseudo_color_prediction") == ["val_00002.png"]


def test_predict_refuses_non_image_non_list(tmp_path, config, checkpoint):
    out = run_module("paddle_rtseg.predict", "--config", config, "--model_path", checkpoint,
                     "--image_path", checkpoint, "--save_dir", tmp_path / "pred", cwd=tmp_path)
    assert_clean_error(out, "neither an image")


def test_config_without_val_dataset(tmp_path, config, checkpoint):
    bare = write_config(tmp_path / "bare.yml", config, val_dataset={"_inherited_": False})
    out = run_module("paddle_rtseg.val", "--config", bare, "--model_path", checkpoint, cwd=tmp_path)
    assert_clean_error(out, "val_dataset")


# --- config values (paddle_rtseg/config.py: the one config reader) ---

def test_yaml_syntax_error_names_file_line_and_column(tmp_path, config):
    bad = tmp_path / "bad.yml"
    bad.write_text("_base_: tiny.yml\nmodel:\n  type: [RTSeg_RTFormer\n  num_classes: 5\n")
    out = train(tmp_path, str(bad))
    assert_clean_error(out, "YAML syntax error in", "bad.yml, line 4, column 14",
                       "expected ',' or ']'")
    assert not (tmp_path / "out").exists()


def test_wrong_value_types_and_negative_iters(tmp_path, config):
    assert_clean_error(train(tmp_path, config, "--opts", "batch_size=abc"),
                       "batch_size in", "must be an integer, got 'abc' (text)")
    assert_clean_error(train(tmp_path, config, "--iters", "-5"),
                       "--iters must be an integer of at least 1, got -5")
    assert not (tmp_path / "out").exists()
    for opts, message in ((["model.base_channels=abc"], "model.base_channels must be a number"),
                          (["model.use_aux_head=maybe"], "must be true or false"),
                          (["lr_scheduler.end_lr=fast"], "lr_scheduler.end_lr must be a number"),
                          (["modle.num_classes=5"], "Did you mean 'model'")):
        with pytest.raises(ConfigError, match=message):
            load_config(config, opts=opts)
    with pytest.raises(ConfigError, match=r"1\.0e-5, not 1e-5"):  # YAML 1.1 reads 1e-5 as text
        load_config(write_config(tmp_path / "e.yml", config, lr_scheduler=dict(end_lr="1e-5")))


def test_opts_values_are_yaml_scalars(tmp_path):
    segformer = write_config(tmp_path / "hq.yml", os.path.join(
        CONFIGS, "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml"),
        model=dict(token_merging="hq", pretrained="weights.pdparams"))
    cfg = load_config(segformer, opts=["model.token_merging=null", "model.pretrained=null",
                                       "model.align_corners=true", "lr_scheduler.end_lr=1e-5",
                                       "train_dataset.transforms=[{type: Normalize}]"])
    model = cfg.dic["model"]
    assert model["token_merging"] is None and model["pretrained"] is None
    assert model["align_corners"] is True
    assert cfg.dic["lr_scheduler"]["end_lr"] == 1e-5  # PaddleSeg's reading of numbers is kept
    assert cfg.dic["train_dataset"]["transforms"] == [{"type": "Normalize"}]
    assert load_config(segformer, opts=["model.token_merging='null'"]).dic["model"][
        "token_merging"] == "null"  # quoted: text, as in YAML


def test_zero_iters_batch_size_and_text_num_classes(tmp_path, config):
    out = train(tmp_path, config, "--iters", 0)  # was ignored: the config's 2000 iterations ran
    assert_clean_error(out, "--iters must be an integer of at least 1, got 0")
    with pytest.raises(ConfigError, match="--batch_size must be an integer of at least 1, got 0"):
        load_config(config, batch_size=0)
    with pytest.raises(ConfigError, match="batch_size in .* must be at least 1, got 0"):
        load_config(config, opts=["batch_size=0"])
    five = write_config(tmp_path / "five.yml", config, model=dict(num_classes="five"))
    with pytest.raises(ConfigError, match="model.num_classes in .* must be an integer, got 'five'"):
        load_config(five)


# --- datasets and checkpoints ---

def test_label_value_out_of_range(tmp_path, config, synthetic_root):
    root = _copy_dataset(tmp_path, synthetic_root)
    path = str(root / "labels" / "train_00005.png")
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    label[:4, :4] = 7  # num_classes is 5; 255 (the ignore index) stays valid
    cv2.imwrite(path, label)
    out = train(tmp_path, _dataset_config(tmp_path, config, root))
    assert_clean_error(out, "1 label file(s) with class ids outside 0..4",
                       "ignore index 255", "labels/train_00005.png (values 7)")
    assert not glob.glob(str(tmp_path / "out" / "iter_*"))


def test_resume_from_a_run_with_other_num_classes(tmp_path, config):
    run = tmp_path / "other" / "iter_10"
    run.mkdir(parents=True)
    paddle.save(RTFormer(3, **TINY).state_dict(), str(run / "model.pdparams"))
    paddle.save({}, str(run / "model.pdopt"))
    out = train(tmp_path, config, "--resume_model", run)
    assert_clean_error(out, "seghead.conv2.weight checkpoint [3, 32, 1, 1] vs model [5, 32, 1, 1]",
                       "another num_classes", "--resume_model continues the run that wrote it")
    assert not (tmp_path / "out").exists()  # a refused run leaves no empty --save_dir behind


# --- a full disk: every write fails with the kernel's ENOSPC (tests/full_disk.py, /dev/full) ---

def _on_full_disk(module, *args, cwd, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "full_disk.py"), module,
                           *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("command", ["train", "predict", "export"])
def test_disk_full(tmp_path, config, checkpoint, command):
    save_dir = tmp_path / "out"
    if command == "train":
        out = _on_full_disk("paddle_rtseg.train", "--config", config, "--iters", 1,
                            "--save_interval", 1, "--save_dir", save_dir, cwd=tmp_path)
        where = save_dir / "iter_1"
    elif command == "predict":
        image = os.path.join(os.path.dirname(config), "img.png")
        cv2.imwrite(image, np.full((64, 64, 3), 90, np.uint8))
        out = _on_full_disk("paddle_rtseg.predict", "--config", config, "--model_path",
                            checkpoint, "--image_path", image, "--save_dir", save_dir, cwd=tmp_path)
        where = save_dir / "pseudo_color_prediction"
    else:  # FLAGS_enable_pir_api=0: the legacy export runs in this process, not a child
        out = _on_full_disk("paddle_rtseg.export", "--config", config, "--model_path", checkpoint,
                            "--save_dir", save_dir, cwd=tmp_path, env={"FLAGS_enable_pir_api": "0"})
        where = tmp_path
    assert_clean_error(out, "The disk is full at {} ".format(where), "choose another --save_dir")
    assert "--input_shape" not in out.stderr
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "out") for f in files]
    assert written == [] and not glob.glob(str(tmp_path / ".export-*")), written
    assert not os.path.exists(save_dir / "iter_1")


def test_disk_full_maps_in_the_shared_writers(tmp_path):
    """The one mapping, in-process: the atomic writers turn ENOSPC into DiskFullError naming the
    folder, and leave no temporary file."""
    from paddle_rtseg.weights import atomic

    def full(obj, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    original, atomic._PADDLE_SAVE = atomic._PADDLE_SAVE, full
    try:
        with pytest.raises(du.DiskFullError, match="disk is full at {}".format(tmp_path / "it")):
            atomic.atomic_save({}, str(tmp_path / "it" / "model.pdparams"))
    finally:
        atomic._PADDLE_SAVE = original
    assert os.listdir(tmp_path / "it") == []


# --- input images: one rule (runtime/paddle_rtseg_runtime/images.py) for the CLIs and the runners ---

def _truncated_jpeg(path, size=64):
    ok, data = cv2.imencode(".jpg", np.random.RandomState(0).randint(0, 255, (size, size, 3))
                            .astype(np.uint8))
    data = data.tobytes()
    with open(path, "wb") as f:
        f.write(data[:len(data) * 2 // 3])
    return path


def test_image_rule(tmp_path):
    image = np.random.RandomState(0).randint(0, 255, (40, 48, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), image.astype(np.uint16) * 256)
    cv2.imwrite(str(tmp_path / "tiny.png"), image[:1, :1])
    cv2.imwrite(str(tmp_path / "ok.jpg"), image)
    with open(tmp_path / "ok.jpg", "ab") as f:
        f.write(b"\x00trailer\xff\xd8")  # data after the end marker (some cameras) is fine
    warnings = []
    for name in ("gray.png", "rgba.png", "deep.png", "ok.jpg"):
        read = du.read_image(str(tmp_path / name), warn=warnings.append)
        assert read.shape == (40, 48, 3) and read.dtype == np.uint8, name
    assert np.array_equal(du.read_image(str(tmp_path / "rgba.png")), image)
    scaled = np.round(image.astype(float) * 255 / image.max())  # 16-bit: scaled by its maximum
    assert np.abs(du.read_image(str(tmp_path / "deep.png")) - scaled).max() <= 1
    assert "gray.png is grayscale" in warnings[0] and "rgba.png has an alpha" in warnings[1]
    assert len(warnings) == 2
    with pytest.raises(du.DeployError, match="tiny.png is 1x1 pixels; the models need at least"):
        du.read_image(str(tmp_path / "tiny.png"))
    with pytest.raises(du.DeployError, match="t.jpg cannot be decoded completely: the JPEG is trunc"):
        du.read_image(_truncated_jpeg(str(tmp_path / "t.jpg")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_root):
    """A legacy export of a tiny RTFormer for the Paddle Inference runner."""
    work = tmp_path_factory.mktemp("export")
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(work / "tiny.yml", SLIM_SYNTHETIC, model=TINY, **datasets)
    weights = str(work / "model.pdparams")
    paddle.save(RTFormer(5, **TINY).state_dict(), weights)
    out = run_module("paddle_rtseg.export", "--config", config, "--model_path", weights,
                     "--save_dir", work / "export", cwd=work)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(config=config, weights=weights, model_dir=str(work / "export"))


def _runner(model_dir, images, save_dir):
    return subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "python", "infer.py"),
                           "--model_dir", model_dir, "--image_path", images, "--save_dir",
                           save_dir], capture_output=True, text=True, timeout=300)


def _predict(exported, images, save_dir, cwd):
    return run_module("paddle_rtseg.predict", "--config", exported["config"], "--model_path",
                      exported["weights"], "--image_path", images, "--save_dir", save_dir, cwd=cwd)


def test_truncated_and_tiny_images_refused_by_predict_and_runner(tmp_path, exported):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _truncated_jpeg(str(folder / "cut.jpg"))
    for out in (_predict(exported, folder, tmp_path / "pred", tmp_path),
                _runner(exported["model_dir"], folder, tmp_path / "run")):
        assert_clean_error(out, "cut.jpg cannot be decoded completely: the JPEG is truncated")
    assert not os.path.exists(tmp_path / "run") and os.listdir(tmp_path / "pred") == []
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((1, 1, 3), np.uint8))  # cv2 assertion before
    assert_clean_error(_predict(exported, tmp_path / "tiny.png", tmp_path / "pred", tmp_path),
                       "tiny.png is 1x1 pixels")
    assert os.listdir(tmp_path / "pred") == []


def test_grayscale_and_rgba_converted_by_predict_and_runner(tmp_path, exported, synthetic_root):
    image = cv2.imread(os.path.join(synthetic_root, "images", "val_00000.jpg"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    predict = _predict(exported, folder, tmp_path / "pred", tmp_path)
    runner = _runner(exported["model_dir"], folder, tmp_path / "run")
    for out in (predict, runner):
        assert out.returncode == 0, out.stderr[-2000:]
        log = out.stdout + out.stderr
        assert "gray.png is grayscale; replicating it to 3 channels" in log
        assert "rgba.png has an alpha channel; it is dropped" in log
    assert sorted(os.listdir(tmp_path / "pred" / "added_prediction")) == ["gray.png", "rgba.png"]
    assert {"gray.png", "rgba.png"} <= set(os.listdir(tmp_path / "run"))


def test_inputs_writing_the_same_outputs_refused_by_predict_and_runner(tmp_path, exported,
                                                                       synthetic_root):
    """a.jpg and a.png would both write a.png: refused before anything is written (PaddleSeg's
    predict silently keeps the last one)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = cv2.imread(os.path.join(synthetic_root, "images", "val_00000.jpg"))
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "a.png"), image)
    for out in (_predict(exported, folder, tmp_path / "pred", tmp_path),
                _runner(exported["model_dir"], folder, tmp_path / "run")):
        assert_clean_error(out, "a.jpg and ", "a.png would both be written as a.png",
                           "Rename one of them")
    assert not os.path.exists(tmp_path / "pred") and not os.path.exists(tmp_path / "run")


def test_outputs_never_replace_an_input_image(tmp_path, exported, synthetic_root):
    """--save_dir = the folder of the images: the runner's mask photo.png would have replaced the
    user's photo.png (a hostile re-run found it): refused, the image unchanged; predict's
    added_prediction/ copy of an image inside added_prediction/ likewise."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = cv2.imread(os.path.join(synthetic_root, "images", "val_00000.jpg"))
    cv2.imwrite(str(folder / "photo.png"), image)
    before = (folder / "photo.png").read_bytes()
    assert_clean_error(_runner(exported["model_dir"], folder, folder), "would replace the input "
                       "image", "Pass another --save_dir")
    nested = tmp_path / "out" / "added_prediction"
    nested.mkdir(parents=True)
    cv2.imwrite(str(nested / "photo.png"), image)
    assert_clean_error(_predict(exported, nested, tmp_path / "out", tmp_path),
                       "would replace the input image")
    assert (folder / "photo.png").read_bytes() == before
    assert sorted(os.listdir(folder)) == ["photo.png"]


def test_runner_refuses_a_save_dir_in_use(tmp_path, exported, synthetic_root):
    """The runners hold --save_dir's run lock like train/predict/export (paddle_rtseg_runtime.
    run_lock): a second run into a folder in use is refused, naming the owner."""
    from test_run_lock import hold
    out = tmp_path / "run"
    holder = hold(out)
    try:
        image = os.path.join(synthetic_root, "images", "val_00000.jpg")
        assert_clean_error(_runner(exported["model_dir"], image, out),
                           "--save_dir {} is in use by another run: pid {}".format(out, holder.pid))
        assert os.listdir(out) == [du.run_lock.LOCK_NAME]  # nothing written
    finally:
        holder.stdin.close()
        holder.wait()
    ok = _runner(exported["model_dir"], image, out)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["val_00000.png", "val_00000_overlay.jpg"]


def test_benchmark_flags(tmp_path):
    out = run_module("paddle_rtseg.bench_deploy", "--model_path", "seaformer_tiny:w.pdparams",
                     "--save_dir", tmp_path / "b", cwd=tmp_path)
    assert_clean_error(out, "NAME=W.pdparams", "seaformer_large")
    out = run_module("paddle_rtseg.bench_deploy", "--models", "seaformer_huge", cwd=tmp_path)
    assert out.returncode == 2 and "invalid choice: 'seaformer_huge'" in out.stderr
