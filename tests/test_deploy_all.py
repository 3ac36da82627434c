"""`python -m paddle_rtseg.deploy_all`: one command exports a tiny RTFormer, converts it for every
backend, and prints per shape and backend the error against dygraph (exit 0 only if all < 1e-4)."""
import os

from conftest import ROOT, run_module

CONFIG = os.path.join(ROOT, "configs", "rtformer", "rtformer_slim_synthetic_128x128_2k.yml")
TINY = ["model.base_channels=8", "model.head_channels=16", "model.spp_channels=16",
        "model.num_heads=4", "model.cross_size=12"]
BACKENDS = ["dygraph", "paddle-inference oneDNN", "paddle-inference no oneDNN", "onnxruntime",
            "paddle-lite x86 .nb"]


def rows(stdout):
    """``{(input, backend): max rel. error}`` from the printed table."""
    table = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in BACKENDS:
            table[(cells[0], cells[1])] = float(cells[2])
    return table


def test_dynamic_export_every_backend_within_1e4(tmp_path):
    proc = run_module("paddle_rtseg.deploy_all", "--config", CONFIG, "--save_dir",
                      tmp_path / "out", "--shapes", "1,3,64,64", "2,3,50,70", "--repeats", "1",
                      "--opts", *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = rows(proc.stdout)
    assert set(table) == {(s, b) for s in ("1x3x64x64", "2x3x50x70") for b in BACKENDS}
    assert max(table.values()) < 1e-4
    assert "dynamic batch/H/W" in proc.stdout and "all supported" in proc.stdout
    for name in ("model.pdmodel", "model.onnx", "model_arm.nb", "model_x86.nb"):
        assert os.path.isfile(tmp_path / "out" / name), name
    assert not [n for n in os.listdir(tmp_path / "out")  # lock released (the list of files kept)
                if n.startswith(".") and n != ".paddle_rtseg_files"]


def test_fixed_input_shape(tmp_path):
    """``--input_shape`` (what SegFormer++ hq/fast need) exports that shape and compares on it;
    another shape is refused with the runners' clear error."""
    proc = run_module("paddle_rtseg.deploy_all", "--config", CONFIG, "--save_dir",
                      tmp_path / "out", "--input_shape", "1", "3", "72", "100", "--repeats", "1",
                      "--opts", *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fixed shape 1x3x72x100" in proc.stdout
    assert set(rows(proc.stdout)) == {("1x3x72x100", b) for b in BACKENDS}
    proc = run_module("paddle_rtseg.deploy_all", "--config", CONFIG, "--save_dir",
                      tmp_path / "out2", "--input_shape", "1", "3", "72", "100", "--shapes",
                      "1,3,64,64", "--repeats", "1", "--opts", *TINY)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "does not fit --input_shape 1 3 72 100" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_shapes_are_refused_before_exporting(tmp_path):
    cases = {("--shapes", "1,3,64"): "--shapes 1,3,64: give N,C,H,W",
             ("--shapes", "1,3,a,64"): "--shapes 1,3,a,64: give N,C,H,W",
             ("--input_shape", "0", "3", "72", "100"): "--input_shape 0 3 72 100: give positive",
             ("--input_shape", "1", "3", "-1", "-1"): "leaves C, H or W dynamic: pass --shapes"}
    for args, message in cases.items():
        proc = run_module("paddle_rtseg.deploy_all", "--config", CONFIG, "--save_dir",
                          tmp_path / "out", *args, "--opts", *TINY)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
        assert not os.path.exists(tmp_path / "out" / "model.pdmodel")


def test_wrong_channel_count_is_a_clear_error(tmp_path):
    proc = run_module("paddle_rtseg.deploy_all", "--config", CONFIG, "--save_dir", tmp_path / "out",
                      "--shapes", "1,4,64,64", "--repeats", "1", "--opts", *TINY)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert "channels 4 != 3" in proc.stderr and "Traceback" not in proc.stderr
