"""Hostile runs (issue 25, classes 7, 4 and 5): nothing the user owns is deleted, a run's lock covers
its whole folder tree, an output folder looks complete only when it is, and runs that cannot end
(batch larger than the dataset, a label of another size, bad flags, a diverging loss) end with one
paragraph and release their lock. Cases are generated: every folder relation to a locked run, every
moment a publish can be killed, every bad flag."""
import hashlib
import json
import os

import pytest

from conftest import run_module
from paddle_rtseg_runtime import DeployError, outputs, run_lock
from test_run_lock import hold

LEGACY = {"FLAGS_enable_pir_api": "0"}  # the exporter's format in this process: no re-run in a child


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder``."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return result


def user_files(folder):
    """A folder as a user has it: a checkpoint, notes, a sub-folder, a hidden file."""
    (folder / "iter_4").mkdir(parents=True)
    (folder / "iter_4" / "model.pdparams").write_bytes(os.urandom(64))
    (folder / "model.pdparams").write_bytes(os.urandom(64))
    (folder / "notes.txt").write_text("what I tried")
    (folder / ".hidden").write_text("mine")
    return snapshot(folder)


def assert_one_paragraph(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# ---- class 7: the writer (outputs.publish) ----------------------------------------------------

def _staged(tmp_path, files, tag):
    stage = outputs.staging(str(tmp_path / "out"))
    for name in files:
        with open(os.path.join(stage, name), "w") as f:
            f.write(tag + name)
    return stage


NEW = ["deploy.yaml", "model.pdiparams", "model.pdmodel", "model_int8.onnx"]


def test_publish_touches_only_its_own_files(tmp_path):
    out = tmp_path / "out"
    mine = user_files(out)
    outputs.publish(_staged(tmp_path, ["deploy.yaml", "model.json", "model.pdiparams"], "a"),
                    str(out))
    outputs.record(str(out / "model.onnx"))  # as convert_onnx does after writing it
    (out / "model.onnx").write_text("converted from a")
    outputs.publish(_staged(tmp_path, NEW, "b"), str(out))
    now = snapshot(out)
    assert {k: now[k] for k in mine} == mine  # every user file as it was
    for name in NEW:
        assert (out / name).read_text() == "b" + name
    # the first export's files it does not write again are gone (model.json, the stale ONNX)
    assert set(now) - set(mine) == set(NEW) | {outputs.MANIFEST}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(outputs.STAGING_PREFIX)]


@pytest.mark.parametrize("step", range(12))
def test_publish_killed_at_any_step_never_looks_complete(tmp_path, monkeypatch, step):
    """A kill at the step-th file operation of publish (replace/remove): deploy.yaml exists only if
    every new file is in place; user files are untouched; the next run under the lock removes the
    staging folder and a new publish completes."""
    out = tmp_path / "out"
    mine = user_files(out)
    outputs.publish(_staged(tmp_path, ["deploy.yaml", "model.json", "model.pdiparams"], "a"),
                    str(out))
    stage = _staged(tmp_path, NEW, "b")
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    def counting(real):
        def op(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > step:
                raise Killed()
            return real(*args, **kwargs)
        return op

    monkeypatch.setattr(outputs.os, "replace", counting(os.replace))
    monkeypatch.setattr(outputs.os, "remove", counting(os.remove))
    try:
        outputs.publish(stage, str(out))
        finished = True
    except Killed:
        finished = False
    monkeypatch.undo()
    if (out / "deploy.yaml").exists():
        text = (out / "deploy.yaml").read_text()
        if text == "bdeploy.yaml":  # new marker: the whole new set is there
            assert all((out / n).read_text() == "b" + n for n in NEW)
        else:  # the old marker: nothing of the new set was moved in yet
            assert text == "adeploy.yaml" and not (out / "model_int8.onnx").exists()
            assert (out / "model.pdiparams").read_text() == "amodel.pdiparams"
    now = snapshot(out)
    assert {k: now[k] for k in mine} == mine
    if finished:
        return
    with run_lock.run_folder(str(tmp_path)):  # the next run: the killed run's staging goes
        assert not [n for n in os.listdir(tmp_path) if n.startswith(outputs.STAGING_PREFIX)]
        outputs.publish(_staged(tmp_path, NEW, "c"), str(out))
    assert all((out / n).read_text() == "c" + n for n in NEW)
    assert not (out / "model.json").exists()  # recorded by the killed publish: still removed
    now = snapshot(out)
    assert {k: now[k] for k in mine} == mine


# ---- class 7: the run lock covers its tree -----------------------------------------------------

RELATIONS = {  # folder of the new run, relative to the locked run's folder "run"
    "iter_N inside": ("run/iter_10", "lies inside"),
    "deep inside": ("run/a/b/c", "lies inside"),
    "parent": (".", "contains"),
    "grandparent": ("..", "contains"),
}


@pytest.fixture(scope="module")
def locked_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tree") / "base"
    run = base / "run"
    (run / "iter_10").mkdir(parents=True)
    (run / "iter_10" / "model.pdparams").write_bytes(b"the running training's checkpoint")
    holder = hold(run)
    yield base
    holder.stdin.close()
    holder.wait(timeout=30)


@pytest.mark.parametrize("relation", sorted(RELATIONS))
def test_a_run_inside_or_around_a_live_run_is_refused(locked_run, relation):
    folder, words = RELATIONS[relation]
    target = os.path.normpath(str(locked_run / folder))
    with pytest.raises(run_lock.RunLockError) as e:
        with run_lock.run_folder(target):
            pass
    assert words in str(e.value) and "A run owns the parts of its folder tree" in str(e.value)
    assert str(locked_run / "run") in str(e.value)
    assert not os.path.exists(os.path.join(target, run_lock.LOCK_NAME))
    assert not (locked_run / "run" / "a").exists()  # the refused run left no folder behind


@pytest.mark.parametrize("folder", ["sibling", "run_2"])
def test_folders_beside_a_live_run_and_top_level_writers_are_not(locked_run, folder):
    with run_lock.run_folder(str(locked_run / folder)):
        pass
    with run_lock.run_folder(str(locked_run), recursive=False):  # writes only at its top level
        pass


def test_beside_a_training_paddlesegs_layout_works_and_its_checkpoints_are_refused(tmp_path):
    """A training declares what it writes (iter_*, best_model): an export or predict into another
    sub-folder of its --save_dir (PaddleSeg's output/ and output/inference_model) runs beside it,
    one into a checkpoint folder is refused; a training around a live export in such a sub-folder
    runs too, one whose checkpoints would land in it is refused."""
    training = hold(tmp_path / "output", writes=("iter_*", "best_model"))
    try:
        for ok in ("inference_model", "result", "iter", "best_model_2/x"):
            with run_lock.run_folder(str(tmp_path / "output" / ok)):
                pass
        for refused in ("iter_10", "best_model", "iter_2/deeper"):
            with pytest.raises(run_lock.RunLockError, match="lies inside"):
                with run_lock.run_folder(str(tmp_path / "output" / refused)):
                    pass
    finally:
        training.stdin.close()
        training.wait(timeout=30)
    export = hold(tmp_path / "out2" / "inference_model")
    try:
        with run_lock.run_folder(str(tmp_path / "out2"), writes=("iter_*", "best_model")):
            pass
        with pytest.raises(run_lock.RunLockError, match="contains"):
            with run_lock.run_folder(str(tmp_path / "out2"), writes=("inference_*",)):
                pass
    finally:
        export.stdin.close()
        export.wait(timeout=30)


def test_a_stale_lock_in_the_tree_does_not_block(tmp_path):
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / run_lock.LOCK_NAME).write_text(json.dumps(
        {"pid": 2 ** 22 + 12345, "host": __import__("socket").gethostname()}))
    with run_lock.run_folder(str(tmp_path / "dead" / "iter_1")):
        pass
    with run_lock.run_folder(str(tmp_path)):
        pass


def test_export_into_a_running_trainings_checkpoint_is_refused(locked_run, tiny_rtformer_config):
    before = snapshot(locked_run / "run")
    proc = run_module("paddle_rtseg.export", "--config", tiny_rtformer_config, "--save_dir",
                      locked_run / "run" / "iter_10", env=LEGACY)
    assert_one_paragraph(proc, "lies inside the folder", "iter_10")
    assert snapshot(locked_run / "run") == before


def test_quantize_takes_the_lock(locked_run, tiny_rtformer_config, tmp_path):
    proc = run_module("paddle_rtseg.quantize", "--config", tiny_rtformer_config, "--model_path",
                      tmp_path / "none.pdparams", "--save_dir", locked_run / "run", env=LEGACY)
    assert_one_paragraph(proc, "is in use by another run")


# ---- class 7: export keeps what the user had in --save_dir --------------------------------------

def test_export_keeps_the_users_files(tmp_path, tiny_rtformer_config):
    out = tmp_path / "out"
    mine = user_files(out)
    # (re-exports: test_publish_* above and test_export.py::test_reexport_replaces_the_whole_export)
    proc = run_module("paddle_rtseg.export", "--config", tiny_rtformer_config, "--save_dir", out,
                      "--input_shape", 1, 3, 64, 64, cwd=tmp_path, env=LEGACY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    now = snapshot(out)
    assert {k: now[k] for k in mine} == mine
    assert {"deploy.yaml", "model.pdmodel", "model.pdiparams"} <= set(now)
    assert not os.path.exists(out / run_lock.LOCK_NAME)


def test_publish_never_replaces_a_file_it_did_not_write(tmp_path):
    """A file in the destination with a name the publish writes, but not listed as ours (the
    user's own deploy.yaml or model.pdmodel): refused before anything changes."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "deploy.yaml").write_text("mine")
    (dest / "notes.txt").write_text("mine too")
    stage = tmp_path / "stage"
    stage.mkdir()
    for name in ("model.pdmodel", "deploy.yaml"):
        (stage / name).write_text("new")
    with pytest.raises(DeployError, match="already holds deploy.yaml that paddle_rtseg did not write"):
        outputs.publish(str(stage), str(dest), marker="deploy.yaml")
    assert sorted(os.listdir(dest)) == ["deploy.yaml", "notes.txt"]
    assert (dest / "deploy.yaml").read_text() == "mine"
    outputs.record(str(dest / "deploy.yaml"))  # once listed as ours, it is replaced
    outputs.publish(str(stage), str(dest), marker="deploy.yaml")
    assert (dest / "deploy.yaml").read_text() == "new" and (dest / "notes.txt").exists()


def test_export_refuses_to_replace_the_users_files_of_its_names(tmp_path, tiny_rtformer_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pdmodel").write_bytes(b"the user's own program")
    proc = run_module("paddle_rtseg.export", "--config", tiny_rtformer_config, "--save_dir", out,
                      "--input_shape", 1, 3, 64, 64, cwd=tmp_path, env=LEGACY)
    assert proc.returncode == 2 and "already holds model.pdmodel that paddle_rtseg did not " \
        "write" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["model.pdmodel"]
    assert (out / "model.pdmodel").read_bytes() == b"the user's own program"


# ---- classes 4 and 5: runs that cannot end, bad flags, divergence (in-process, through run_cli) ---

@pytest.fixture
def cli(monkeypatch, capsys, tiny_rtformer_config, tmp_path):
    """Run ``paddle_rtseg.cli.train`` in this process through the CLI wrapper; returns
    (exit code, the one error line or None, --save_dir)."""
    from paddle_rtseg.cli import errors, train
    monkeypatch.setattr(errors.malloc_tuning, "apply", lambda: None)
    out = tmp_path / "out"

    def run(*flags, config=tiny_rtformer_config):
        capsys.readouterr()
        argv = ["--config", config, "--save_dir", str(out), "--iters", "2"] + list(map(str, flags))
        try:
            errors.run_cli(lambda: train.main(argv))
            code = 0
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.startswith("error: ")]
        assert "Traceback" not in err, err[-3000:]
        assert len(lines) <= 1, lines
        assert not (out / run_lock.LOCK_NAME).exists()  # the lock is released, whatever happened
        return code, (lines[0] if lines else None), out
    return run


FLAG_CASES = {  # flags -> what the one paragraph must say
    ("--num_workers", -1): "--num_workers must be at least 0",
    ("--num_workers", -8): "--num_workers must be at least 0",
    ("--save_interval", 0): "--save_interval must be at least 1",
    ("--save_interval", -5): "--save_interval must be at least 1",
    ("--log_iters", 0): "--log_iters must be at least 1",
    ("--log_iters", -1): "--log_iters must be at least 1",
    ("--keep_checkpoint_max", -1): "--keep_checkpoint_max must be at least 0",
    ("--learning_rate", "inf"): "--learning_rate must be a finite number greater than 0",
    ("--learning_rate", "nan"): "--learning_rate must be a finite number greater than 0",
    ("--learning_rate", "1e400"): "--learning_rate must be a finite number greater than 0",
    ("--seed", -5): "--seed must be between 0 and 4294967295",
    ("--seed", 2 ** 70): "--seed must be between 0 and 4294967295",
}


@pytest.mark.parametrize("flag", sorted(FLAG_CASES, key=str), ids=str)
def test_flags_out_of_range_give_one_paragraph(cli, flag):
    code, error, out = cli(*flag)
    assert code == 2 and FLAG_CASES[flag] in error, error
    assert not out.exists()


@pytest.mark.parametrize("kind", ["LRScheduler", "math", "Tensor", "lr", "5", "[1, 2]"])
def test_lr_scheduler_type_that_is_not_a_scheduler(cli, tmp_path, tiny_rtformer_config, kind):
    config = tmp_path / "lr.yml"
    config.write_text("_base_: tiny.yml\nlr_scheduler:\n  type: {}\n  learning_rate: 0.01\n"
                      .format(kind))
    code, error, out = cli(config=str(config))
    assert code == 2 and "Unknown lr_scheduler type" in error and "PolynomialDecay" in error
    assert not out.exists()


def test_resuming_at_or_past_the_last_iteration_is_one_paragraph(cli, tmp_path):
    """--resume_model iter_2 with --iters 2 (PaddleSeg's loop then died on an unset variable), or
    a folder not named iter_N (PaddleSeg reads the iteration from the name): one paragraph, after
    the checkpoint itself was checked."""
    import shutil
    code, error, out = cli("--save_interval", 2)  # a real 2-iteration checkpoint
    assert code == 0, error
    for name, iters, message in (("iter_2", 2, "is at iteration 2, and the run is 2 iterations"),
                                 ("iter_9", 3, "Pass --iters larger than 9"),
                                 ("checkpoint", 3, "must end in _N")):
        folder = tmp_path / "old" / name
        shutil.copytree(str(out / "iter_2"), str(folder))
        shutil.rmtree(str(out))
        code, error, _ = cli("--resume_model", str(folder), "--iters", iters)
        assert code == 2 and message in error, error
        assert not out.exists()
        shutil.copytree(str(folder), str(out / "iter_2"))


def test_a_checkpoint_folder_holding_the_users_files_is_never_rotated_away(cli, tmp_path):
    """--save_dir with an iter_1/ holding the user's notes and a sub-folder: PaddleSeg's rotation
    (keep_checkpoint_max 1) deleted the whole folder; refused before training, all kept. A
    folder holding only a checkpoint (an earlier run's) is PaddleSeg's to rotate."""
    old = tmp_path / "out" / "iter_1"
    (old / "sub").mkdir(parents=True)
    (old / "notes.txt").write_text("mine")
    code, error, out = cli("--save_interval", 1, "--keep_checkpoint_max", 1)
    assert code == 2 and "has a folder iter_1 holding notes.txt, sub besides a checkpoint" in \
        error, error
    assert (old / "notes.txt").read_text() == "mine" and (old / "sub").is_dir()


def test_opts_given_twice_are_both_applied(tmp_path, tiny_rtformer_config):
    """``--opts a=1 --opts b=2`` applies both lists (argparse kept only the last one, silently)."""
    from paddle_rtseg.cli.train import parse_args
    args = parse_args(["--config", tiny_rtformer_config, "--opts", "iters=3",
                       "--opts", "batch_size=2"])
    assert args.opts == ["iters=3", "batch_size=2"]


@pytest.mark.parametrize("batch_size", [65, 1000])
def test_batch_larger_than_the_dataset_is_refused(cli, batch_size):
    """PaddleSeg drops incomplete batches: 64 images and a batch of 65 would loop forever."""
    code, error, out = cli("--batch_size", batch_size)
    assert code == 2, error
    assert "batch_size {} is larger than the train_dataset (64 image(s))".format(batch_size) \
        in error and "--batch_size 64 or less" in error
    assert not out.exists()


def _with_label(tmp_path, synthetic_root, config, change):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    change(root)
    path = tmp_path / "moved.yml"
    path.write_text("_base_: {}\ntrain_dataset:\n  dataset_root: {}\n".format(config, root))
    return str(path)


@pytest.mark.parametrize("size", [(64, 64), (128, 127), (129, 128), (1, 1)])
def test_label_of_another_size_is_refused_before_training(cli, tmp_path, synthetic_root,
                                                          tiny_rtformer_config, size):
    import cv2
    import numpy as np

    def change(root):
        cv2.imwrite(str(root / "labels" / "train_00009.png"), np.zeros(size[::-1], np.uint8))
    code, error, out = cli(config=_with_label(tmp_path, synthetic_root, tiny_rtformer_config,
                                              change))
    assert code == 2 and "labels/train_00009.png is {}x{} pixels".format(*size) in error, error
    assert "images/train_00009" in error and "must have its image's size" in error
    assert not out.exists()


@pytest.mark.parametrize("lr, where", [(1e30, "The loss (CrossEntropyLoss) became nan"),
                                       (3e38, "hold NaN or infinite values")])
def test_a_diverging_run_stops_and_keeps_only_finite_checkpoints(cli, lr, where):
    """--learning_rate large enough to overflow: the loss or the weights become non-finite; the
    run stops with one paragraph naming the last checkpoint, and no checkpoint holds NaN/inf."""
    import paddle
    code, error, out = cli("--iters", 6, "--batch_size", 2, "--save_interval", 1,
                           "--learning_rate", lr, "--log_iters", 1)
    assert code == 2 and where in error and "Lower --learning_rate" in error, error
    checkpoints = sorted(d for d in os.listdir(out) if d.startswith("iter_"))
    assert len(checkpoints) < 6
    for d in checkpoints:
        for name in ("model.pdparams", "model.pdopt"):
            state = paddle.load(str(out / d / name))
            for key, value in state.items():
                if isinstance(value, paddle.Tensor) and value.dtype == paddle.float32:
                    assert bool(paddle.isfinite(value).all()), (d, name, key)
    if checkpoints:
        assert "--resume_model {}".format(out / checkpoints[-1]) in error


LOADER_THREAD = """
import sys, threading
import numpy as np, cv2
from paddle_rtseg.datasets.checked_io import CheckedCompose
from paddle_rtseg_runtime import run_lock
from paddleseg.transforms import Normalize, RandomHorizontalFlip
folder, case = sys.argv[1], sys.argv[2]
cv2.imwrite(folder + "/img.png", np.zeros((64, 48, 3), np.uint8))
cv2.imwrite(folder + "/label.png", np.zeros((64, 40) if case == "size" else (64, 48), np.uint8))
transforms = [Normalize()] if case == "size" else [RandomHorizontalFlip(prob="x")]
compose = CheckedCompose(transforms)
with run_lock.run_folder(folder + "/run"):
    t = threading.Thread(target=compose, args=({"img": folder + "/img.png",
                                                "label": folder + "/label.png", "trans_info": [],
                                                "gt_fields": ["label"]},))
    t.start()
    t.join()
print("not reached")
"""


def test_a_loader_thread_error_ends_the_run_and_releases_the_lock(tmp_path):
    """A label of another size (a DataError) and a transform failing (any error) in the loader's
    thread: one paragraph, exit 2, the lock removed (the two cases run side by side)."""
    import subprocess
    import sys
    cases = {"size": "is 40x64 pixels but its image",
             "transform": "failed in the data loader (TypeError"}
    procs = {}
    for case in cases:
        (tmp_path / case).mkdir()
        procs[case] = subprocess.Popen([sys.executable, "-c", LOADER_THREAD, str(tmp_path / case),
                                        case], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        proc.stdout, proc.stderr = stdout, stderr
        assert_one_paragraph(proc, cases[case])
        assert "not reached" not in stdout
        assert not (tmp_path / case / "run" / run_lock.LOCK_NAME).exists()


LOADER_WORKER = """
import sys
import numpy as np, cv2, paddle
from paddle_rtseg.cli.errors import run_cli
from paddle_rtseg.datasets.checked_io import CheckedCompose
from paddle_rtseg_runtime import run_lock
from paddleseg.transforms import Normalize, RandomHorizontalFlip
folder, case = sys.argv[1], sys.argv[2]
cv2.imwrite(folder + "/img.png", np.zeros((64, 48, 3), np.uint8))
cv2.imwrite(folder + "/label.png", np.zeros((64, 40) if case == "size" else (64, 48), np.uint8))
transforms = [Normalize()] if case == "size" else [RandomHorizontalFlip(prob="x")]
compose = CheckedCompose(transforms)
class Data(paddle.io.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        if i < 2:
            return np.zeros((3, 8, 8), "float32")
        data = compose({"img": folder + "/img.png", "label": folder + "/label.png",
                        "trans_info": [], "gt_fields": ["label"]})
        return data["img"]
def main():
    with run_lock.run_folder(folder + "/run"):
        for _ in paddle.io.DataLoader(Data(), batch_size=1, num_workers=1):
            pass
run_cli(main)
print("not reached")
"""


def test_a_loader_worker_process_error_ends_the_run_and_releases_the_lock(tmp_path):
    """``--num_workers`` > 0: Paddle re-raises a worker process's error in its reader thread (which
    dies alone; the main thread then fails with "Blocking queue is killed", no reason given). The
    same two cases as above: one paragraph naming the file, exit 2, the lock removed."""
    import subprocess
    import sys
    cases = {"size": "is 40x64 pixels but its image",
             "transform": "failed in the data loader (TypeError"}
    procs = {}
    for case in cases:
        (tmp_path / case).mkdir()
        procs[case] = subprocess.Popen([sys.executable, "-c", LOADER_WORKER, str(tmp_path / case),
                                        case], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        proc.stdout, proc.stderr = stdout, stderr
        assert_one_paragraph(proc, cases[case])
        assert "img.png" in stderr and "Blocking queue" not in stderr
        assert "not reached" not in stdout
        assert not (tmp_path / case / "run" / run_lock.LOCK_NAME).exists()


# ---- class 6 remainder: random or truncated .pdmodel / .pdiparams / .nb -------------------------

TINY_PROGRAM = """
import sys, paddle
paddle.seed(0)
net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.BatchNorm2D(4),
                           paddle.nn.ReLU(), paddle.nn.Conv2D(4, 2, 1))
net.eval()
paddle.jit.save(net, sys.argv[1] + "/model",
                input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
"""


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A legacy program of two convolutions (+ deploy.yaml) and its x86 .nb."""
    import subprocess
    import sys
    import paddle_rtseg_runtime as du
    folder = tmp_path_factory.mktemp("tiny_model")
    subprocess.run([sys.executable, "-c", TINY_PROGRAM, str(folder)], check=True, timeout=300,
                   env=dict(os.environ, **LEGACY), capture_output=True)
    (folder / "deploy.yaml").write_text(
        "Deploy:\n  model: model.pdmodel\n  params: model.pdiparams\n  output_op: none\n"
        "  input_shape: [-1, 3, -1, -1]\n  transforms: [{type: Normalize}]\n")
    du.convert_lite(str(folder), str(folder / "model_x86"), "x86")
    return folder


def _mutations(data, seed):
    """Seeded corruptions of a file: truncations, random bytes, flipped header bytes, empty."""
    import numpy as np
    rng = np.random.default_rng(seed)
    cases = {"empty": b"", "random": rng.bytes(len(data)), "1 byte": data[:1]}
    for fraction in (0.1, 0.5, 0.9, 0.999):
        cases["cut at {}".format(fraction)] = data[:int(len(data) * fraction)]
    for i in range(3):
        flipped = bytearray(data)
        for at in rng.integers(0, min(len(data), 64), 4):
            flipped[at] ^= int(rng.integers(1, 256))
        cases["header flip {}".format(i)] = bytes(flipped)
    return cases


MUTATION_CHILD = """
import json, shutil, sys
import numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from test_hostile_runs import _mutations
import paddle_rtseg_runtime as du
model_dir, name, scratch = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
only = sys.argv[5].split(",") if len(sys.argv) > 5 else None  # the cases to run (default: all)
x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
make = (lambda d: du.LitePredictor(str(d / "model_x86.nb"))) if name.endswith(".nb") else \\
    (lambda d: du.PaddleInferencePredictor(str(d), use_mkldnn=False))
reference = make(model_dir)(x)
outcomes = {}
for case, mutated in _mutations((model_dir / name).read_bytes(), seed=len(name)).items():
    if only is not None and case not in only:
        continue
    folder = scratch / case.replace(" ", "_")
    shutil.copytree(model_dir, folder)
    (folder / name).write_bytes(mutated)
    print("case", case, flush=True)  # the last one named before a signal is the culprit
    try:
        out = make(folder)(x)
    except du.DeployError as e:
        ok = str(folder / name) in str(e) and len(str(e).splitlines()) == 1
        outcomes[case] = "refused" if ok else "bad message: " + str(e)[:300]
        continue
    # a mutation that loads (e.g. bytes the loader ignores) must compute the same model
    outcomes[case] = "loaded" if np.allclose(out, reference, atol=1e-5) else "wrong output"
print(json.dumps(outcomes))
"""


def _run_mutations(tiny_model_dir, tmp_path, name, cases=None):
    import json
    import subprocess
    import sys
    scratch = tmp_path / ("all" if cases is None else cases[0].replace(" ", "_"))
    scratch.mkdir()
    args = [sys.executable, "-c", MUTATION_CHILD, str(tiny_model_dir), name, str(scratch),
            os.path.dirname(os.path.abspath(__file__))] + ([",".join(cases)] if cases else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    ran = [line[5:] for line in proc.stdout.splitlines() if line.startswith("case ")]
    if proc.returncode != 0:
        return proc.returncode, ran, proc.stderr[-2000:]
    return 0, ran, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["model.pdmodel", "model.pdiparams", "model_x86.nb"])
def test_corrupt_model_files_are_refused_before_native_code(tiny_model_dir, tmp_path, name):
    """Every mutation loads correctly or gives DeployError (one paragraph in the runners): never a
    traceback of another type, never a wrong result, never a signal. Lite's loader aborts the
    process on these and byte flips inside a .pdmodel can leave a program that parses and still
    crashes Paddle Inference's native loader (SIGSEGV seen in CI): both kinds are loaded in a
    child process first (model_dir.check_nb, program_probe), so all of them run in ONE child here,
    as an app would, away from the loader threads other tests of this file leave in the worker."""
    rc, ran, outcomes = _run_mutations(tiny_model_dir, tmp_path, name)
    assert rc == 0, "rc {} at case {!r}: {}".format(rc, ran[-1] if ran else None, outcomes)
    print(name, outcomes)
    assert all(v in ("refused", "loaded") for v in outcomes.values()), outcomes
    for case in ("empty", "random", "1 byte", "cut at 0.5"):
        assert outcomes[case] == "refused", outcomes


def test_unknown_programs_load_in_a_child_first(tiny_model_dir, tmp_path, monkeypatch):
    """program_probe: a program the project wrote loads with no child process; a copy that is not
    recorded is loaded once in a child per predictor setting, then remembered; a child that dies
    by a signal (what a corrupt program does to Paddle's loader) gives DeployError naming the file
    and the signal, and this process never loads it."""
    import shutil
    import signal
    import subprocess
    import paddle_rtseg_runtime as du
    from paddle_rtseg_runtime import program_probe
    monkeypatch.setenv("PADDLE_RTSEG_TRUST_DIR", str(tmp_path / "trust"))
    children = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):
        if cmd[:2] == [program_probe.sys.executable, "-c"] and "PaddleInference" in cmd[2]:
            children.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(program_probe.subprocess, "run", counting_run)
    copy = tmp_path / "copy"
    shutil.copytree(str(tiny_model_dir), str(copy))
    program_probe.record_written(str(copy / "model.pdmodel"), str(copy / "model.pdiparams"))
    du.PaddleInferencePredictor(str(copy), use_mkldnn=False)
    assert children == []                      # written by the project: no child
    (tmp_path / "trust" / program_probe.digest(str(copy / "model.pdmodel"),
                                               str(copy / "model.pdiparams"))).unlink()
    du.PaddleInferencePredictor(str(copy), use_mkldnn=False)
    du.PaddleInferencePredictor(str(copy), use_mkldnn=False)
    assert len(children) == 1                  # probed once, then remembered for this setting
    du.PaddleInferencePredictor(str(copy), use_mkldnn=True)
    assert len(children) == 2                  # another setting, another probe
    crash = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    monkeypatch.setattr(program_probe, "_PROBE", crash)
    with pytest.raises(du.DeployError) as e:   # a setting not probed yet: the child crashes
        du.PaddleInferencePredictor(str(copy), use_mkldnn=False, threads=1)
    message = str(e.value)
    assert str(copy / "model.pdmodel") in message and "signal {}".format(
        int(signal.SIGSEGV)) in message and len(message.splitlines()) == 1, message


APP_CHILD = """
import sys, numpy as np
import paddle_rtseg_runtime as du
try:
    du.PaddleInferencePredictor(sys.argv[1], use_mkldnn=False)(np.zeros((1, 3, 16, 16), "float32"))
    print("LOADED")
except du.DeployError as e:
    print("REFUSED " + str(e))
"""


def test_a_program_that_crashes_paddles_loader_is_refused_in_one_paragraph(tiny_model_dir, tmp_path):
    """A real case of the corrupt-but-parsing program (found by a seeded search of single byte
    flips over the tiny program: 1 of 30 crashed): the 'n' of the variable name
    ``batch_norm_0.tmp_1`` xor 139 (0xE5, no longer UTF-8). It passes the structural checks, and
    Paddle 3.0's loader dies by SIGSEGV on it (checked first, without the probe); an app loading it
    through the runtime gets one paragraph naming the file and the signal, and lives."""
    import shutil
    import signal
    import subprocess
    import sys
    folder = tmp_path / "crash"
    shutil.copytree(str(tiny_model_dir), str(folder))
    data = bytearray((folder / "model.pdmodel").read_bytes())
    at = data.index(b"batch_norm_0.tmp_1") + len("batch_")
    data[at] ^= 139
    (folder / "model.pdmodel").write_bytes(bytes(data))
    env = dict(os.environ, PADDLE_RTSEG_TRUST_DIR=str(tmp_path / "trust"))
    unprobed = subprocess.run([sys.executable, "-c", APP_CHILD, str(folder)], capture_output=True,
                              text=True, timeout=300, env=dict(env, PADDLE_RTSEG_PROBE_CHILD="1"))
    assert unprobed.returncode == -signal.SIGSEGV, (
        "this flip no longer crashes this Paddle's loader (rc {}): the case needs another flip"
        .format(unprobed.returncode), unprobed.stdout[-500:])
    app = subprocess.run([sys.executable, "-c", APP_CHILD, str(folder)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert app.returncode == 0, app.stderr[-2000:]
    line = app.stdout.strip().splitlines()[-1]
    assert line.startswith("REFUSED ") and str(folder / "model.pdmodel") in line, line
    assert "signal {}".format(int(signal.SIGSEGV)) in line, line
