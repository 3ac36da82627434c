"""``python -m paddle_rtseg.fit_budget``: the sweep over input scale x SegFormer++ merging on a tiny
model (seconds), its Pareto frontier, the budget, the refusal of an impossible budget (one
paragraph, exit 2, nothing written), the chosen export running in deploy/python/infer.py, and the
ARM two-step flow (step 1's .nb files timed by deploy/lite/cpp's rtseg_lite_time under qemu, read
back by step 3, whose mIoU runs on the ARM kernels), and one-point sweeps on ONNX Runtime and
OpenVINO whose exports their runners run."""
import json
import os
import re
import subprocess
import sys

import paddle
import pytest
from conftest import ROOT, run_module, write_config

import paddle_rtseg
from paddle_rtseg.cli import fit_budget as fb
from paddle_rtseg_runtime import lite_arm

BASE = os.path.join(ROOT, "configs", "segformer_pp", "segformer_pp_b0_synthetic_128x128_2k.yml")
TINY_MODEL = dict(embedding_dim=32, backbone=dict(
    type="RTSeg_MiT_B0", embed_dims=[16, 32, 48, 64], num_heads=[1, 2, 3, 4], depths=[1, 1, 1, 1]))
LEGACY = {"FLAGS_enable_pir_api": "0"}  # the command's own mode: no re-run of itself
FAST = ["--val_images", 4, "--rounds", 2, "--calls", 1, "--threads", 1]
ARM_REASON = lite_arm.unavailable_reason()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_root):
    tmp = tmp_path_factory.mktemp("fit_budget")
    datasets = {k: {"dataset_root": synthetic_root} for k in ("train_dataset", "val_dataset")}
    config = write_config(tmp / "tiny.yml", BASE, model=TINY_MODEL, **datasets)
    paddle.seed(0)
    model = paddle_rtseg.build_model(config)
    path = str(tmp / "model.pdparams")
    paddle.save(model.state_dict(), path)
    return config, path, tmp


def sweep(tiny, save_dir, *extra, env=LEGACY):
    config, path, _ = tiny
    return run_module("paddle_rtseg.fit_budget", "--config", config, "--model_path", path,
                      "--save_dir", save_dir, *FAST, *extra, env=env)


def dominated(p, points):
    return any(q is not p and q["latency_ms"] <= p["latency_ms"] and q["miou"] >= p["miou"] and
               (q["latency_ms"] < p["latency_ms"] or q["miou"] > p["miou"]) for q in points)


def test_pareto_keeps_only_undominated_points_and_choose_honours_the_budget():
    pts = [dict(name=n, latency_ms=l, miou=m) for n, l, m in [
        ("a", 10, 0.50), ("b", 12, 0.40), ("c", 20, 0.60), ("d", 20, 0.55), ("e", 30, 0.60),
        ("f", 40, 0.70), ("g", 5, float("nan"))]]
    assert [p["name"] for p in fb.pareto(pts)] == ["a", "c", "f"]
    assert fb.choose(pts, 25)["name"] == "c"
    assert fb.choose(pts, 19.9)["name"] == "a"
    assert fb.choose(pts, 40)["name"] == "f"
    assert fb.choose(pts, 9) is None
    pts[2]["runnable"] = False  # c: measured, but the runners refuse its precision here
    assert [p["name"] for p in fb.pareto(pts)] == ["a", "c", "f"]
    assert fb.choose(pts, 25)["name"] == "d"
    for p in pts:
        p.update(scale=1.0, input_size=[8, 8], merging="none", precision="fp32")
    message = fb.impossible_message(pts, 9, "onnxruntime", "OUT")
    assert "the fastest of the 5 points measured" in message and "takes 10.0 ms" in message
    pts[0].update(runnable=False, precision="int8")
    message = fb.impossible_message(pts, 11, "onnxruntime", "OUT")
    assert "a within the budget run only in int8, which the runners refuse" in message
    assert "takes 12.0 ms" in message and "Nothing was written to OUT" in message


def test_merging_specs_and_bad_ones():
    assert fb.merging_value("hq") == "hq"
    stages = fb.merging_value("2x2@12")
    assert [s is not None for s in stages] == [True, True, False, False]
    assert fb.merging_value("bsm@0.4/0.6")[0]["kv_r"] == 0.4
    for bad in ("bsm@1.5/0.5", "2x2@9", "quick"):
        with pytest.raises(fb.BudgetError, match="is not a strategy"):
            fb.merging_value(bad)


@pytest.mark.slow
def test_sweep_frontier_budget_and_export_runs_in_infer_py(tiny, tmp_path):
    config, path, _ = tiny
    out = str(tmp_path / "out")
    run = sweep(tiny, out, "--budget_ms", 100000, "--backend", "paddle_inference",
                "--precision", "fp32", "--scales", 1.0, 0.5, "--merging", "none", "2x2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto" in run.stdout and "Chosen for 100000 ms" in run.stdout
    with open(os.path.join(out, "fit_budget.json")) as f:
        record = json.load(f)
    points = record["points"]
    assert {(p["scale"], p["merging"]) for p in points} == {(1.0, "none"), (1.0, "2x2"),
                                                            (0.5, "none"), (0.5, "2x2")}
    assert all(p["latency_ms"] > 0 and 0 <= p["miou"] <= 1 for p in points)
    # the frontier is exactly the undominated points, and nothing else is marked on it
    assert set(record["frontier"]) == {p["name"] for p in points if not dominated(p, points)}
    assert {p["name"] for p in points if p["pareto"]} == set(record["frontier"])
    chosen = [p for p in points if p["name"] == record["chosen"]][0]
    assert chosen["miou"] == max(p["miou"] for p in points)  # the budget lets every point in
    # on the measured points, any budget picks the most accurate point within it
    for budget in sorted(p["latency_ms"] for p in points):
        best = fb.choose(points, budget)
        assert best["latency_ms"] <= budget
        assert best["miou"] == max(p["miou"] for p in points if p["latency_ms"] <= budget)
    assert os.path.getsize(os.path.join(out, "fit_budget.png")) > 1000

    # the export is the chosen point: fixed input, a resize to it, its merging recorded
    import paddle_rtseg_runtime as du
    info = du.read_deploy_yaml(out)
    h, w = chosen["input_size"]
    assert info["input_shape"] == [1, 3, h, w]
    assert info["transforms"][0] == {"type": "Resize", "target_size": [w, h]}
    assert info["fit_budget"]["token_merging"] == chosen["merging"]
    with open(os.path.join(_dataset_root(config), "val.txt")) as f:
        image = os.path.join(_dataset_root(config), f.readline().split()[0])
    result = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "python", "infer.py"),
                             "--model_dir", out, "--image_path", image, "--save_dir",
                             str(tmp_path / "masks"), "--cpu_threads", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import cv2
    mask = cv2.imread(str(tmp_path / "masks" / (os.path.splitext(os.path.basename(image))[0]
                                                + ".png")), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.shape[:2] == cv2.imread(image).shape[:2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnxruntime_and_openvino_sweeps_export_what_their_runner_runs(tiny, tmp_path, backend):
    """The other CPU backends: one point measured on that backend, exported with its model file,
    and the runner the command prints segments an image from the export."""
    import paddle_rtseg_runtime as du
    if backend == "openvino" and not du.openvino_available():
        pytest.skip("this Paddle has no OpenVINO engine (the command refuses the backend)")
    config = tiny[0]
    out = str(tmp_path / "out")
    run = sweep(tiny, out, "--budget_ms", 100000, "--backend", backend, "--precision", "fp32",
                "--scales", 0.5, "--merging", "none")
    assert run.returncode == 0, run.stderr[-3000:]
    with open(os.path.join(out, "fit_budget.json")) as f:
        record = json.load(f)
    assert record["backend"] == backend and len(record["points"]) == 1
    assert record["points"][0]["latency_ms"] > 0 and record["chosen"] == record["points"][0]["name"]
    assert du.read_deploy_yaml(out)["fit_budget"]["backend"] == backend
    runner = re.search(r"runner: (deploy/\S+) --model_dir (\S+)(.*?)\)", run.stdout)
    assert runner and runner.group(2) == out, run.stdout[-2000:]
    with open(os.path.join(_dataset_root(config), "val.txt")) as f:
        image = os.path.join(_dataset_root(config), f.readline().split()[0])
    result = subprocess.run([sys.executable, os.path.join(ROOT, runner.group(1)), "--model_dir", out,
                             *runner.group(3).split(), "--image_path", image, "--save_dir",
                             str(tmp_path / "masks")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(str(tmp_path / "masks"))


def _dataset_root(config):
    return paddle_rtseg.load_config(config).dic["val_dataset"]["dataset_root"]


@pytest.mark.slow
def test_impossible_budget_is_one_paragraph_and_writes_nothing(tiny, tmp_path):
    out = tmp_path / "out"
    run = sweep(tiny, str(out), "--budget_ms", 0.001, "--backend", "paddle_inference",
                "--precision", "fp32", "--scales", 0.5, "--merging", "2x2", "--val_images", 1)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [l for l in run.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "No setting meets --budget_ms 0.001" in errors[0]
    assert "fastest" in errors[0] and "Nothing was written" in errors[0]
    left = sorted(os.listdir(out)) if out.exists() else []
    assert not [n for n in left if not n.startswith(".paddle_rtseg_lock")], left


def test_bad_arguments_are_refused_before_any_work(tiny):
    config, path, _ = tiny
    base = ["--config", config, "--model_path", path, "--backend", "paddle_inference"]
    for extra, why in [(["--budget_ms", "-3"], "--budget_ms must be a positive number"),
                       ([], "--budget_ms is required"),
                       (["--budget_ms", "5", "--scales", "0"], "--scales must lie in"),
                       (["--budget_ms", "5", "--latency_file", "t.txt"], "is for --backend lite_arm")]:
        with pytest.raises(fb.BudgetError, match=why):
            fb.check_args(fb.parse_args(base + extra))
    # a precision without the backend's kernels is skipped, none left is refused
    args = fb.parse_args(["--config", "c", "--model_path", "m", "--backend", "onnxruntime",
                          "--precision", "bf16"])
    with pytest.raises(fb.BudgetError, match="None of --precision bf16 has onnxruntime kernels"):
        fb.Sweep(args, log=lambda *a: None).check_precisions()
    args.precision = ["fp32", "bf16"]
    notes = []
    assert fb.Sweep(args, log=notes.append).check_precisions() == ["fp32"]
    assert notes and notes[0].startswith("skipped --precision bf16")


def _latency_line(name, digest, *numbers):
    return "\t".join([name, digest] + [str(n) for n in numbers])


def test_latency_file_reader(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.nb").write_bytes(b"model a")
    digest = fb.sha256(str(models / "a.nb"))
    path = tmp_path / "latency.txt"
    head = "# {} threads=4 rounds=5 warmup=1\n# file\tsha256\tmedian_ms\tmin_ms\tmax_ms\trounds\n" \
        .format(fb.LATENCY_FORMAT)
    path.write_text(head + _latency_line("a.nb", digest, 12.5, 11.0, 14.0, 5) + "\n")
    assert fb.read_latency_file(str(path), str(models)) == {"a.nb": 12.5}
    for body, why in [(_latency_line("a.nb", "0" * 64, 12.5, 11, 14, 5), "is not the"),
                      (_latency_line("b.nb", digest, 12.5, 11, 14, 5), "not a model of"),
                      (_latency_line("a.nb", digest, 9, 11, 14, 5), "impossible times"),
                      (_latency_line("a.nb", digest, "x", 11, 14, 5), "not a number"),
                      ("a.nb " + digest + " 12.5", "not 6"), ("", "holds no timed model")]:
        path.write_text(head + body + "\n")
        with pytest.raises(fb.BudgetError, match=why):
            fb.read_latency_file(str(path), str(models))
    path.write_text("median 12\n")
    with pytest.raises(fb.BudgetError, match="not written by rtseg_lite_time"):
        fb.read_latency_file(str(path), str(models))


@pytest.mark.slow
@pytest.mark.skipif(ARM_REASON is not None and not os.environ.get("RTSEG_REQUIRE_ARM"),
                    reason="ARM tests skipped: {}".format(ARM_REASON))
def test_arm_two_steps_time_on_device_program_and_accuracy_on_arm_kernels(tiny, tmp_path):
    out = str(tmp_path / "out")
    common = ["--backend", "lite_arm", "--precision", "fp32", "--scales", 0.5,
              "--merging", "2x2", "--val_images", 2]
    step1 = sweep(tiny, out, *common)  # no --latency_file: the .nb files and models.txt
    assert step1.returncode == 0, step1.stderr[-3000:]
    models = os.path.join(out, "arm_sweep")
    assert sorted(os.listdir(models)) == [".paddle_rtseg_files", "models.txt",
                                          "s0.50_2x2_fp32.deploy.yaml", "s0.50_2x2_fp32.nb"]
    assert not os.path.exists(os.path.join(out, "deploy.yaml"))
    # step 2 ("on the device"): the timing program under qemu; its times mean nothing here
    tools = lite_arm.build_tools()
    latency = str(tmp_path / "latency.txt")
    proc = subprocess.run(lite_arm.qemu_command(os.path.join(tools, "rtseg_lite_time"),
                                                os.path.join(models, "models.txt"), latency,
                                                1, 2, 1),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    times = fb.read_latency_file(latency, models)
    assert set(times) == {"s0.50_2x2_fp32.nb"}
    # step 3: those times, mIoU on the ARM kernels, the export of the most accurate point
    step3 = sweep(tiny, out, *common, "--budget_ms", 1e9, "--latency_file", latency)
    assert step3.returncode == 0, step3.stderr[-3000:]
    with open(os.path.join(out, "fit_budget.json")) as f:
        record = json.load(f)
    assert {p["name"] + ".nb": p["latency_ms"] for p in record["points"]} == times
    assert all(0 <= p["miou"] <= 1 for p in record["points"])
    assert os.path.isfile(os.path.join(out, "model_arm.nb"))
    import paddle_rtseg_runtime as du
    assert du.read_deploy_yaml(out, program_files=False)["input_shape"] == [1, 3, 64, 64]


def test_combine_plots_frontiers_and_names_each_budgets_winner(tmp_path, capsys):
    def record(title, points):
        pts = [dict(name="{}_{}".format(s, m), scale=s, merging=m, precision="fp32",
                    input_size=[8, 8], latency_ms=l, miou=q) for s, m, l, q in points]
        front = {p["name"] for p in fb.pareto(pts)}
        for p in pts:
            p["pareto"] = p["name"] in front
        path = tmp_path / (title + ".json")
        path.write_text(json.dumps(dict(title=title, config=title, points=pts)))
        return str(path)
    a = record("A", [(1.0, "none", 90, 0.50), (0.5, "none", 30, 0.40)])
    b = record("B", [(1.0, "none", 150, 0.60), (0.5, "hq", 45, 0.45)])
    png = str(tmp_path / "families.png")
    args = fb.parse_args(["--combine", a, b, "--plot", png, "--budgets", "20", "40", "60", "200"])
    assert fb.combine(args) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| ")][1:]
    assert "nothing fits" in rows[0]
    assert "A: 0.5x, none" in rows[1] and "B: 0.5x, hq" in rows[2] and "B: 1x, none" in rows[3]
    assert "A 90.0 ms 50.00 (over)" in rows[1] and "A 90.0 ms 50.00;" in rows[3]
    assert os.path.getsize(png) > 1000
