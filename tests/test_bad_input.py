"""Bad input gets a one-paragraph error naming the problem and the fix, no stack trace."""
import os
import shutil

import cv2
import numpy as np
import paddle
import pytest
import yaml
from conftest import CONFIGS, run_module, write_config

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


def test_grayscale_and_rgba_images_are_converted(tmp_path, config, checkpoint, synthetic_root):
    image = cv2.imread(os.path.join(synthetic_root, "images", "val_00000.jpg"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    out = run_module("paddle_rtseg.predict", "--config", config, "--model_path", checkpoint,
                     "--image_path", folder, "--save_dir", tmp_path / "pred", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "is grayscale; replicating it to 3 channels" in out.stdout + out.stderr
    assert "has an alpha channel" in out.stdout + out.stderr
    assert sorted(os.listdir(tmp_path / "pred" / "added_prediction")) == ["gray.png", "rgba.png"]


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
    """A file whose header is fine but whose body is cut off fails inside Paddle's loader thread;
    the run must stop with the message, not hang (Paddle's DataLoader waits forever otherwise)."""
    root = _copy_dataset(tmp_path, synthetic_root)
    for i in range(64):
        path = root / "labels" / "train_{:05d}.png".format(i)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    out = run_module("paddle_rtseg.train", "--config", _dataset_config(tmp_path, config, root),
                     "--iters", 1, "--save_dir", tmp_path / "out", cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot be decoded" in out.stderr and "labels/train_000" in out.stderr


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
