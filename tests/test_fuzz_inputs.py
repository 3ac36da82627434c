"""Bounded, seeded fuzzing of the input readers: valid files (.pdparams, zip and legacy .pth,
deploy.yaml, PNG headers) are mutated (bytes flipped, length fields set to extremes, cut, spliced)
and each mutation must load or give the command line's one-paragraph error (run through
``errors.run_cli``: exit 2, one ``error:`` line) -- never another exception (a traceback), a
signal, a hang, or memory far beyond what the file holds.

The weight and YAML readers are pure Python: their mutations run in-process, under tracemalloc.
PNG decoding is native (OpenCV/libpng): its mutations run in a child process whose address space is
capped (RLIMIT_AS), so a crash, an abort or a runaway allocation shows as the child's death.
Each test prints its case count."""
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import paddle
import pytest
import yaml
from conftest import ROOT
from torchfile import save_torch_legacy, save_torch_state_dict

from paddle_rtseg.cli import errors
from paddle_rtseg.weights.checkpoints import read_file
from paddle_rtseg.weights.safe_pickle import load_paddle
from paddle_rtseg.weights.torch_reader import load_torch_state_dict
from paddle_rtseg_runtime.model_dir import read_deploy_yaml

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
               b"\xff" * 8, struct.pack("<q", 1 << 62), struct.pack("<i", -1), b"\x01\x00"]


def mutate(data, rng):
    """One random mutation of ``data`` (bytes)."""
    data = bytearray(data)
    kind = int(rng.integers(0, 6))
    pos = int(rng.integers(0, max(len(data), 1)))
    if kind == 0:  # flip a few bytes
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    elif kind == 1:  # an extreme value over whatever field is there
        value = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
        data[pos:pos + len(value)] = value
    elif kind == 2:  # cut
        del data[pos:]
    elif kind == 3:  # delete a span
        del data[pos:pos + int(rng.integers(1, 16))]
    elif kind == 4:  # duplicate a span (repeats opcodes, chunks, YAML lines)
        end = pos + int(rng.integers(1, 64))
        data[pos:pos] = data[pos:end]
    else:  # insert random bytes
        data[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8))
    return bytes(data)


def run_as_cli(call, capsys):
    """``call()`` inside the CLI wrapper: (exit code or None, the ``error:`` lines)."""
    def main():
        call()
        return None

    try:
        errors.run_cli(main)
        code = None
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error: ")], err


def _check_in_process(paths_and_calls, capsys, monkeypatch):
    monkeypatch.setattr(errors.malloc_tuning, "apply", lambda: None)
    outcomes = {"loaded": 0, "refused": 0}
    for path, call in paths_and_calls:
        size = os.path.getsize(path)
        start = time.perf_counter()
        tracemalloc.start()
        try:
            code, lines, err = run_as_cli(call, capsys)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - start < 5, path
        # memory: a small multiple of the file (pickle objects, YAML nodes) plus the reader's own
        assert peak < 200 * size + (16 << 20), (path, size, peak)
        if code is None:
            outcomes["loaded"] += 1
        else:
            assert code == 2 and len(lines) == 1 and "Traceback" not in err, (path, err[-2000:])
            assert len(lines[0]) < 2100 and not lines[0].rstrip().endswith(": ."), lines[0]
            outcomes["refused"] += 1
    return outcomes


def _valid_checkpoints(folder):
    rng = np.random.default_rng(0)
    state = {"conv.weight": rng.random((4, 3, 3, 3), dtype=np.float32),
             "conv.bias": rng.random(4).astype(np.float32), "bn._mean": np.zeros(4, np.float32),
             "steps": np.array(3, np.int64), "t": rng.random((3, 5), dtype=np.float32).T}
    pd = os.path.join(folder, "valid.pdparams")
    paddle.save({k: paddle.to_tensor(np.ascontiguousarray(v)) for k, v in state.items()}, pd)
    return {"pdparams": pd,
            "pth-zip": save_torch_state_dict(state, os.path.join(folder, "valid_zip.pth")),
            "pth-legacy": save_torch_legacy(state, os.path.join(folder, "valid_legacy.pth"))}


def _zip_with_mutated_pickle(path, rng, out):
    """A torch zip whose data.pkl (not the container: zip CRCs would catch most flips) is mutated."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, mutate(data, rng) if name.endswith("data.pkl") or
                       rng.random() < 0.2 else data)
    return out


@pytest.mark.parametrize("kind", ["pdparams", "pth-zip", "pth-legacy"])
def test_fuzz_checkpoints(tmp_path, capsys, monkeypatch, kind):
    valid = _valid_checkpoints(str(tmp_path))[kind]
    rng = np.random.default_rng({"pdparams": 1, "pth-zip": 2, "pth-legacy": 3}[kind])
    data = open(valid, "rb").read()
    cases = []
    for i in range(300):
        path = str(tmp_path / "m{}{}".format(i, os.path.splitext(valid)[1]))
        if kind == "pth-zip" and i % 3:
            _zip_with_mutated_pickle(valid, rng, path)
        else:
            mutated = data
            for _ in range(int(rng.integers(1, 3))):
                mutated = mutate(mutated, rng)
            open(path, "wb").write(mutated)
        # what read_checkpoint reads (it then needs a model to convert a PyTorch state dict)
        read = load_paddle if kind == "pdparams" else load_torch_state_dict
        cases.append((path, lambda p=path, r=read: read_file(p, r)))
    outcomes = _check_in_process(cases, capsys, monkeypatch)
    with capsys.disabled():
        print("\nfuzz {}: {} cases, {}".format(kind, len(cases), outcomes))
    assert outcomes["refused"] > 60, outcomes


def _valid_deploy_yaml():
    return yaml.safe_dump({"Deploy": {
        "model": "model.pdmodel", "params": "model.pdiparams",
        "transforms": [{"type": "Resize", "target_size": [512, 256], "keep_ratio": False},
                       {"type": "Normalize", "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225]}],
        "input_shape": [-1, 3, -1, -1], "output_op": "argmax", "output_dtype": "int32"}},
        default_flow_style=None, sort_keys=False).encode()


def test_fuzz_deploy_yaml(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(4)
    valid = _valid_deploy_yaml()
    cases = []
    for i in range(300):
        folder = tmp_path / str(i)
        folder.mkdir()
        for name in ("model.pdmodel", "model.pdiparams"):
            (folder / name).write_bytes(b"x")
        mutated = valid
        for _ in range(int(rng.integers(1, 4))):
            mutated = mutate(mutated, rng)
        (folder / "deploy.yaml").write_bytes(mutated)
        cases.append((str(folder / "deploy.yaml"), lambda f=str(folder): read_deploy_yaml(f)))
    outcomes = _check_in_process(cases, capsys, monkeypatch)
    with capsys.disabled():
        print("\nfuzz deploy.yaml: {} cases, {}".format(len(cases), outcomes))
    assert outcomes["refused"] > 60 and outcomes["loaded"] > 10, outcomes


_PNG_CHILD = r"""
import json, os, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (__CAP__, __CAP__))
import paddle_rtseg_runtime as du  # no Paddle: the runtime package
for path in sys.argv[2:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        image = du.read_image(path, warn=lambda m: None)
        result = {"loaded": list(image.shape)}
    except du.DeployError as e:
        result = {"refused": str(e)}
    except BaseException as e:
        result = {"other": traceback.format_exc()[-1500:]}
    print(json.dumps(dict(result, path=path)), flush=True)
"""


def _png(rng):
    import cv2
    h, w = (int(v) for v in rng.integers(32, 64, 2))
    channels = [1, 3, 4][int(rng.integers(0, 3))]
    dtype = np.uint16 if rng.random() < 0.3 else np.uint8
    image = rng.integers(0, np.iinfo(dtype).max, (h, w, channels), dtype=dtype)
    return cv2.imencode(".png", image[..., 0] if channels == 1 else image)[1].tobytes()


def _mutate_png(data, rng):
    """Mostly header mutations with the CRC fixed (so libpng gets past it): width, height, bit
    depth, colour type, interlace; ancillary chunks (a zTXt that inflates to 8 MB); else raw
    mutations anywhere."""
    data = bytearray(data)
    roll = rng.random()
    if roll < 0.2:  # an ancillary chunk after IHDR: text, or compressed text that inflates 1000:1
        kind = [b"tEXt", b"zTXt", b"iTXt", b"prVt"][int(rng.integers(0, 4))]
        body = b"Comment\0" + (b"\0" + zlib.compress(b"\0" * (8 << 20), 9) if kind == b"zTXt"
                               else bytes(rng.integers(32, 127, 64, dtype=np.uint8)))
        chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        return bytes(data[:33] + chunk + data[33:])
    if roll < 0.7:
        ihdr = bytearray(data[16:29])
        field = int(rng.integers(0, 4))
        if field == 0:  # width/height: small, huge, zero, or just over/under the pixel limit
            value = int(rng.choice([0, 1, 31, 1 << 15, 20000, 40000, 10001, 2 ** 31 - 1, 2 ** 32 - 1]))
            at = int(rng.integers(0, 2)) * 4
            ihdr[at:at + 4] = struct.pack(">I", value)
        else:
            ihdr[8 + int(rng.integers(0, 5))] = int(rng.integers(0, 256))
        data[16:29] = ihdr
        data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
        return bytes(data)
    return mutate(bytes(data), rng)


def test_fuzz_png_headers_in_a_memory_capped_child(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for i in range(400):
        path = str(tmp_path / "p{}.png".format(i))
        open(path, "wb").write(_mutate_png(_png(rng), rng))
        paths.append(path)
    limit = 3 << 30  # numpy + OpenCV need ~1 GB of address space; a 100 MP image fits, a bomb not
    child = _PNG_CHILD.replace("__CAP__", str(limit))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", child, ROOT] + paths, capture_output=True,
                          text=True, timeout=120, env=env)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    last = records[-1] if records else None
    assert proc.returncode == 0, ("child died", proc.returncode, last, proc.stderr[-2000:])
    results = [r for r in records if "start" not in r]
    assert len(results) == len(paths)
    other = [r for r in results if "other" in r]
    assert not other, other[:3]
    outcomes = {"loaded": sum("loaded" in r for r in results),
                "refused": sum("refused" in r for r in results)}
    for r in results:
        if "refused" in r:
            assert r["refused"] and len(r["refused"]) < 2100
    bombs = [r for r in results if "PADDLE_RTSEG_MAX_IMAGE_PIXELS" in r.get("refused", "")]
    print("\nfuzz PNG: {} cases, {}, {} refused by the pixel limit".format(
        len(paths), outcomes, len(bombs)))
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 100 and bombs, outcomes
