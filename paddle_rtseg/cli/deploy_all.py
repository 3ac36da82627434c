"""One command from a config to every backend, checked against dygraph.

    python -m paddle_rtseg.deploy_all --config CFG [--model_path W.pdparams] [--save_dir DIR] \
        [--input_shape N C H W] [--shapes 1,3,512,1024 2,3,250,333] [--repeats 5] [--threads 2] \
        [--precision fp32 bf16 int8] [--opts key=value ...]

Exports once with dynamic batch/H/W, or the fixed ``--input_shape`` (legacy format, logits out),
converts to ONNX (paddle2onnx, opset 17) and to Paddle Lite ``.nb`` for x86 and ARM (checking every op has an ARM kernel), runs
dygraph, Paddle Inference (oneDNN on and off; its OpenVINO engine where Paddle has it), ONNX Runtime
and Lite x86 on the same inputs, and
prints, per input shape and backend, the relative max error of the logits against dygraph and the
median latency. Exit code 0 when every backend is within 1e-4, 1 otherwise, 2 on bad input.

``--precision bf16 int8`` adds Paddle Inference oneDNN bf16 / int8, OpenVINO bf16 / int8 (where this
Paddle has the engine) and ONNX Runtime int8 (int8
models from ``python -m paddle_rtseg.quantize``, calibrated on the config's training images, written
to ``<save_dir>/quantize``); those rows report the latency ratio to fp32 on the same backend and
the share of pixels whose argmax equals dygraph's instead of the 1e-4 check. A precision the CPU
lacks the instructions for is an error naming them (``paddle_rtseg_runtime/cpu_features.py``).
"""
import argparse
import os
import sys
import time

import numpy as np

import paddle_rtseg_runtime as du
from paddle_rtseg.benchmarks.timing import medians, round_robin


def dygraph_predictor(model):
    import paddle

    def run(x):
        with paddle.no_grad():
            return model(paddle.to_tensor(x))[0].numpy()
    run.name = "dygraph"
    return run


def convert_all(save_dir, log=print):
    """ONNX + Lite x86 + Lite ARM artifacts of an exported directory; returns their paths."""
    artifacts = {}
    start = time.perf_counter()
    artifacts["onnx"] = du.convert_onnx(save_dir, os.path.join(save_dir, "model.onnx"))
    log("paddle2onnx (opset {}): {} ({:.1f} s)".format(du.DEFAULT_OPSET, artifacts["onnx"],
                                                      time.perf_counter() - start))
    ops, supported = du.lite_model_ops(save_dir, "arm")
    missing = [op for op, kernels in ops.items() if not kernels]
    if not supported or missing:
        raise du.DeployError("Paddle Lite has no ARM kernel for: {}".format(", ".join(missing)))
    log("paddle_lite_opt --print_model_ops (arm): {} ops, all supported".format(len(ops)))
    for target in ("arm", "x86"):
        artifacts["lite_" + target] = du.convert_lite(
            save_dir, os.path.join(save_dir, "model_" + target), target)
        log("paddle_lite_opt --valid_targets={}: {}".format(target, artifacts["lite_" + target]))
    return artifacts


def backend_predictors(save_dir, artifacts, threads=2):
    """Every backend this machine runs, as ``{name: predictor}`` (same exported model). Paddle
    Inference's OpenVINO engine only where this Paddle has it (3.0 CPU builds)."""
    predictors = {
        "paddle-inference oneDNN": du.PaddleInferencePredictor(save_dir, use_mkldnn=True,
                                                               threads=threads),
        "paddle-inference no oneDNN": du.PaddleInferencePredictor(save_dir, use_mkldnn=False,
                                                                  threads=threads),
    }
    if du.openvino_available():
        predictors["paddle-inference OpenVINO"] = du.PaddleInferencePredictor(
            save_dir, use_openvino=True, threads=threads)
    predictors.update({
        "onnxruntime": du.OnnxPredictor(artifacts["onnx"], threads=threads),
        "paddle-lite x86 .nb": du.LitePredictor(artifacts["lite_x86"]),
    })
    return predictors


def format_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--save_dir", default="output/deploy_all")
    parser.add_argument("--input_shape", nargs=4, type=int, default=None,
                        metavar=("N", "C", "H", "W"),
                        help="export with this fixed shape (SegFormer++ hq/fast need one); "
                             "--shapes then defaults to it")
    parser.add_argument("--shapes", nargs="+", default=None,
                        help="input shapes N,C,H,W to compare on (default: 1,3,512,1024 and "
                             "2,3,250,333, or --input_shape)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"],
                        help="also run these CPU precisions (fp32 always runs)")
    parser.add_argument("--calib_batches", type=int, default=16,
                        help="training images that calibrate int8")
    parser.add_argument("--opts", nargs="+", action="extend", default=None)
    return parser.parse_args(argv)


def low_precision_predictors(args, model, threads=2, log=print):
    """``{name: predictor}`` for ``args.precision``'s bf16/int8 (quantize runs for int8)."""
    import subprocess
    from paddle_rtseg.weights.atomic import atomic_save
    out = {}
    if "bf16" in args.precision:
        out["paddle-inference oneDNN bf16"] = du.PaddleInferencePredictor(
            args.save_dir, threads=threads, precision="bf16")
        if du.openvino_available():
            out["paddle-inference OpenVINO bf16"] = du.PaddleInferencePredictor(
                args.save_dir, threads=threads, precision="bf16", use_openvino=True)
    if "int8" in args.precision:
        du.cpu_features.require("int8", "Paddle Inference and ONNX Runtime")
        qdir = os.path.join(args.save_dir, "quantize")
        weights = args.model_path
        if not weights:  # the export replaced save_dir: keep the initialisation for quantize
            weights = os.path.join(qdir, "init.pdparams")
            atomic_save(model.state_dict(), weights)
        log("int8: python -m paddle_rtseg.quantize ... --save_dir {}".format(qdir))
        cmd = [sys.executable, "-m", "paddle_rtseg.quantize", "--config", args.config,
               "--model_path", weights, "--save_dir", qdir, "--evaluate", "false",
               "--calib_batches", str(args.calib_batches)]
        proc = subprocess.run(cmd + (["--opts"] + args.opts if args.opts else []),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode:
            raise du.DeployError("int8 quantization failed ({}):\n{}".format(
                " ".join(cmd), proc.stdout.strip()[-1500:]))
        int8_dir = os.path.join(qdir, "ptq_int8")
        out["paddle-inference oneDNN int8"] = du.PaddleInferencePredictor(
            int8_dir, threads=threads, precision="int8")
        if du.openvino_available():
            out["paddle-inference OpenVINO int8"] = du.PaddleInferencePredictor(
                int8_dir, threads=threads, precision="int8", use_openvino=True)
        out["onnxruntime int8"] = du.OnnxPredictor(du.default_onnx_file(int8_dir, "int8"),
                                                   threads, precision="int8")
    return out


def compared_shapes(input_shape, shapes):
    """The N,C,H,W shapes to compare on, checked against each other; :class:`DeployError` naming
    the flag otherwise."""
    if input_shape and any(v == 0 or v < -1 for v in input_shape):
        raise du.DeployError("--input_shape {}: give positive sizes, or -1 for a dynamic one."
                             .format(" ".join(map(str, input_shape))))
    if shapes:
        parsed = []
        for text in shapes:
            try:
                shape = tuple(int(v) for v in text.split(","))
            except ValueError:
                shape = ()
            if len(shape) != 4 or min(shape) < 1:
                raise du.DeployError("--shapes {}: give N,C,H,W as four positive integers, e.g. "
                                     "1,3,512,1024.".format(text))
            parsed.append(shape)
    elif not input_shape:
        parsed = [(1, 3, 512, 1024), (2, 3, 250, 333)]
    elif min(input_shape[1:]) < 1:
        raise du.DeployError("--input_shape {} leaves C, H or W dynamic: pass --shapes with the "
                             "sizes to compare on.".format(" ".join(map(str, input_shape))))
    else:  # a dynamic (-1) batch is compared at batch 1
        parsed = [(max(input_shape[0], 1),) + tuple(input_shape[1:])]
    for shape in parsed if input_shape else []:
        if any(f not in (-1, v) for f, v in zip(input_shape, shape)):
            raise du.DeployError(
                "--shapes {} does not fit --input_shape {}: the export takes only that shape "
                "(-1 = any). Drop --shapes or give shapes of that size.".format(
                    ",".join(map(str, shape)), " ".join(map(str, input_shape))))
    return parsed


def prepare(args):
    """Build and export the model, convert it for every backend; returns (shapes, predictors)."""
    import paddle
    from paddle_rtseg import load_checkpoint
    from paddle_rtseg.weights.atomic import atomic_save
    from paddle_rtseg.config import load_config
    from paddle_rtseg.cli.errors import writable_dir
    from paddle_rtseg.exporting.static_graph import drop_pretrained, export
    from paddleseg.cvlibs import SegBuilder

    shapes = compared_shapes(args.input_shape, args.shapes)
    writable_dir(args.save_dir)
    cfg = drop_pretrained(load_config(args.config, opts=args.opts))
    model = SegBuilder(cfg).model
    weights = args.model_path
    if weights:
        load_checkpoint(model, weights)
    else:  # no weights given: export the very initialisation dygraph runs with
        weights = os.path.join(args.save_dir, "init.pdparams")
        atomic_save(model.state_dict(), weights)
    model.eval()
    export(args.config, args.save_dir, weights, input_shape=args.input_shape, output_op="none",
           fmt="legacy", opts=args.opts)
    print("exported ({}, legacy format): {}".format(
        "fixed shape {}".format("x".join(map(str, args.input_shape))) if args.input_shape
        else "dynamic batch/H/W", args.save_dir))
    artifacts = convert_all(args.save_dir)
    return shapes, dict(dygraph=dygraph_predictor(model),
                        **backend_predictors(args.save_dir, artifacts, args.threads),
                        **low_precision_predictors(args, model, args.threads))


def compare(shapes, predictors, repeats, input_shape):
    """Print the error/latency table; returns the exit code (0: every backend within 1e-4)."""
    for shape in shapes:  # e.g. 4 channels for an RGB model: the runners' clear error, up front
        du.check_input(np.empty(shape, "float32"), input_shape)
    rows, worst = [], 0.0
    for shape in shapes:
        x = np.random.RandomState(0).randn(*shape).astype("float32")
        ref = predictors["dygraph"](x)
        ms = medians(round_robin(predictors, x, repeats))  # backends alternate
        for name, predictor in predictors.items():
            y = predictor(x)
            error = float(np.abs(y - ref).max() / np.abs(ref).max())
            low = name.endswith(("bf16", "int8"))  # not held to 1e-4: argmax agreement instead
            if name != "dygraph" and not low:
                worst = max(worst, error)
            fp32 = ms.get(name[:-5])  # "onnxruntime int8" -> "onnxruntime"
            rows.append(["x".join(map(str, shape)), name, "{:.1e}".format(error),
                         "{:.1f}".format(ms[name]),
                         "{:.2f}x".format(ms[name] / fp32) if low and fp32 else "",
                         "{:.4f}".format(float((y.argmax(1) == ref.argmax(1)).mean()))])
    header = ["input", "backend", "max rel. error vs dygraph", "median ms", "latency vs fp32",
              "argmax = dygraph"]
    if not any(name.endswith(("bf16", "int8")) for name in predictors):  # fp32 only: 4 columns
        header, rows = header[:4], [r[:4] for r in rows]
    print(format_table(header, rows))
    print("worst relative error over backends: {:.2e} ({})".format(
        worst, "OK (< 1e-4)" if worst < 1e-4 else "ABOVE 1e-4"))
    return 0 if worst < 1e-4 else 1


def main(argv=None):
    args = parse_args(argv)
    from paddle_rtseg.cli.errors import run_cli

    def run():
        from paddle_rtseg_runtime.run_lock import run_folder
        with run_folder(args.save_dir):  # the export inside takes it over, re-entrantly
            shapes, predictors = prepare(args)
            input_shape = du.read_deploy_yaml(args.save_dir)["input_shape"]
            return compare(shapes, predictors, args.repeats, input_shape)
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
