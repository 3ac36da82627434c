"""``python -m paddle_rtseg.quantize``: int8 for every backend: post-training quantization calibrated on training images, measured.

    python -m paddle_rtseg.quantize --config CFG --model_path trained.pdparams --save_dir DIR \
        [--calib_batches 16] [--algo hist [KL avg ...]] [--lite true|false] [--evaluate true|false] \
        [--opts key=value ...]

1. Exports the fp32 model (legacy format, dynamic shapes, logits out) to ``DIR/fp32`` (+ ``model.onnx``).
2. Static post-training quantization with Paddle's own API,
   ``paddle.static.quantization.PostTrainingQuantization`` (Paddle 3.0 in legacy static mode; PaddleSlim
   is not needed and its releases do not support Paddle 3.0's program format): activations calibrated
   on training images (``--algo``), weights per-channel abs-max, conv2d/depthwise_conv2d/matmul_v2;
   saved with fake-quant ops to ``DIR/ptq_int8``: what Paddle Inference runs in int8 with oneDNN
   (``deploy/python/infer.py --precision int8``) and Paddle Lite turns into int8 ARM kernels.
   KL prints its progress (it is pure Python over every activation tensor: minutes).
3. ONNX Runtime's static int8 model (QDQ, per-channel, same calibration images) to
   ``DIR/ptq_int8/model_int8.onnx`` (``deploy/onnx/infer.py --precision int8``), see ``onnx_int8``.
   Where this Paddle has Paddle Inference's OpenVINO engine (3.0), the PTQ of step 2 again (first
   ``--algo``) written as ``quantize_linear``/``dequantize_linear`` pairs to
   ``DIR/ptq_int8/model_qdq.*``: what that engine runs in int8 (``deploy/python/infer.py
   --use_openvino --precision int8``; its front-end cannot read fake-quant ops). It calibrates
   again, as long as step 2 took for that algorithm.
4. ``paddle_lite_opt`` to ARM ``.nb`` for fp32, PTQ int8 and weight-only int8
   (``--quant_model=true --quant_type=QUANT_INT8``), plus x86 ``.nb`` where x86 kernels exist.
   A model whose int8 layers of some op type crash Lite's ARM kernels says so
   (``lite_arm_int8_float_ops``, MixFormer's linear layers): its ARM PTQ ``.nb`` is made from a
   second PTQ with those ops in float, ``DIR/ptq_int8_lite_arm`` (written even with
   ``--evaluate false``).
A PalQuant model (``RTSeg_PalQuantSeg``) is quantized exactly instead
(:mod:`paddle_rtseg.quantization.palquant_int8`): its low-bit convolutions become int8 convolutions
whose scales make the low-bit integers exact, every other layer stays fp32, nothing is calibrated
(``--algo`` is not used); ONNX Runtime's model runs them as ``ConvInteger``.

5. mIoU on the config's validation set for each variant this machine can run (fp32, bf16 and int8
   on Paddle Inference oneDNN, PTQ also simulated without oneDNN, int8 on Paddle Inference's
   OpenVINO engine where this Paddle has it, fp32 and int8 on ONNX Runtime,
   weight-int8 on the Lite x86 runtime), the time each int8 model took to make and every size.

Paddle picks the static-graph format when it is imported, so like the exporter this re-runs itself
with ``FLAGS_enable_pir_api=0`` when needed.
"""
import argparse
import os
import shutil
import subprocess
import sys

import paddle_rtseg_runtime as du
from paddle_rtseg.cli.deploy_all import format_table
from paddle_rtseg.quantization.ptq import (ALGOS, DEFAULT_ALGO, KL_NOTE, LITE_ARM_PTQ,
                                           QUANTIZABLE_OPS, WHY_DEFAULT, lite_arm_float_ops,
                                           lite_arm_ptq_dir, lite_x86_miou, miou,
                                           post_training_quantize)


def _size_mb(path):
    return os.path.getsize(path) / 2 ** 20


def _try(make, notes, what):
    """``make()``, or None with a note when this machine cannot run it (CPU without the flag)."""
    try:
        return make()
    except du.DeployError as e:
        notes.append("{}: {}".format(what, str(e).splitlines()[0]))
        return None


def run(args):
    """Owns ``--save_dir`` while it runs (:mod:`paddle_rtseg_runtime.run_lock`); each int8 folder
    is built in a staging folder and published whole (``deploy.yaml`` last), so a killed run never
    leaves a ``ptq_int8/`` that looks complete without its ``model_int8.onnx``."""
    from paddle_rtseg_runtime.run_lock import run_folder
    with run_folder(args.save_dir):
        return _run(args)


def _run(args):
    import time

    from paddle_rtseg_runtime.outputs import publish, staging

    from paddleseg.cvlibs import SegBuilder
    from paddle_rtseg.config import load_config
    from paddle_rtseg.exporting.static_graph import export
    from paddle_rtseg.quantization import palquant_int8
    from paddle_rtseg.quantization.onnx_int8 import quantize_onnx_int8

    cfg = load_config(args.config, opts=args.opts)
    builder = SegBuilder(cfg)
    val = builder.val_dataset  # generates the synthetic set on first use
    train = builder.train_dataset if cfg.dic.get("train_dataset") else val
    num_classes = val.num_classes
    val_pairs = [tuple(p) for p in val.file_list][: args.val_images]
    calib_pairs = [tuple(p) for p in train.file_list][: args.calib_batches]
    print(du.cpu_features.summary())

    fp32_dir = os.path.join(args.save_dir, "fp32")
    export(args.config, fp32_dir, args.model_path, output_op="none", fmt="legacy", opts=args.opts)
    transforms = du.read_deploy_yaml(fp32_dir)["transforms"]
    calib = [du.preprocess(du.read_image(p), transforms) for p, _ in calib_pairs]
    made, ptq_dirs, finals = {}, {}, {}
    exact = palquant_int8.is_palquant(fp32_dir)
    if exact:
        print("PalQuant model: its low-bit convolutions are quantized exactly (int8 scales of one "
              "per integer level), the other layers stay fp32; no calibration, --algo is not used")
        args.algo = args.algo[:1]
    for i, algo in enumerate(args.algo):
        out = os.path.join(args.save_dir, "ptq_int8" if i == 0 else "ptq_int8_" + algo)
        if algo == "KL" and not exact:
            print("--algo KL: " + KL_NOTE + "; --algo {} takes seconds (docs/deployment.md)"
                  .format(DEFAULT_ALGO))
        start = time.perf_counter()
        finals[algo] = out  # written into a staging folder, published below once complete
        ptq_dirs[algo] = (palquant_int8.quantize_exact(fp32_dir, staging(out), calib[:1]) if exact
                          else post_training_quantize(fp32_dir, staging(out), calib, algo))
        made[algo] = time.perf_counter() - start
        print("{}: {:.1f} s -> {}".format("exact int8 (PalQuant)" if exact else
                                          "PTQ --algo " + algo, made[algo], out))
    ptq_dir = ptq_dirs[args.algo[0]]
    onnx_fp32 = du.convert_onnx(fp32_dir, os.path.join(fp32_dir, "model.onnx"))
    start = time.perf_counter()
    if exact:
        palquant_int8.onnx_conv_integer(onnx_fp32, du.default_onnx_file(ptq_dir, "int8"))
    else:
        quantize_onnx_int8(onnx_fp32, du.default_onnx_file(ptq_dir, "int8"), calib,
                           reduce_range=args.reduce_range)
    made["onnx"] = time.perf_counter() - start
    print("ONNX Runtime int8 ({}): {:.1f} s -> {}".format(
        "ConvInteger, exact" if exact else "QDQ, per-channel, min/max", made["onnx"],
        du.default_onnx_file(finals[args.algo[0]], "int8")))
    if du.openvino_available():  # what only Paddle Inference's OpenVINO engine reads
        start = time.perf_counter()
        if exact:
            palquant_int8.write_qdq(fp32_dir, ptq_dir)
        else:
            post_training_quantize(fp32_dir, ptq_dir, calib, args.algo[0], qdq=True,
                                   reduce_range=args.reduce_range)
        made["qdq"] = time.perf_counter() - start
        print("{} as quantize_linear/dequantize_linear pairs (OpenVINO): {:.1f} s -> {}"
              .format("exact int8" if exact else "PTQ --algo " + args.algo[0], made["qdq"],
                      os.path.join(finals[args.algo[0]],
                                   os.path.basename(du.openvino_int8_paths(ptq_dir)[0]))))
    arm_float = () if exact or not args.lite else lite_arm_float_ops(cfg.dic["model"])
    if arm_float:  # the int8 program for Lite's ARM kernels differs from ptq_int8/
        arm_final = os.path.join(args.save_dir, LITE_ARM_PTQ)
        start = time.perf_counter()
        arm_dir = post_training_quantize(
            fp32_dir, staging(arm_final), calib, args.algo[0],
            op_types=[t for t in QUANTIZABLE_OPS if t not in arm_float])
        made["arm"] = time.perf_counter() - start
        print("PTQ --algo {} for Paddle Lite's ARM kernels with {} in float (this model's int8 {} "
              "crash Lite 2.13's ARM kernels): {:.1f} s -> {}".format(
                  args.algo[0], ", ".join(arm_float), ", ".join(arm_float), made["arm"],
                  arm_final))
        publish(arm_dir, arm_final)
    elif os.path.isdir(os.path.join(args.save_dir, LITE_ARM_PTQ)):  # an earlier model's
        shutil.rmtree(os.path.join(args.save_dir, LITE_ARM_PTQ))
    for algo in args.algo:  # every file made: each folder appears complete, deploy.yaml last
        publish(ptq_dirs[algo], finals[algo])
        ptq_dirs[algo] = finals[algo]
    ptq_dir = ptq_dirs[args.algo[0]]
    onnx_int8 = du.default_onnx_file(ptq_dir, "int8")

    if not args.evaluate:
        return 0
    rows, notes = [], []

    def lite(model_dir, target, quant=None, tag=""):
        if not args.lite:
            return None
        out = os.path.join(args.save_dir, "lite_{}_{}".format(tag, target))
        try:
            return du.convert_lite(model_dir, out, target, quant)
        except du.DeployError as e:
            notes.append("{} {}: {}".format(tag, target, str(e).splitlines()[0]))
            return None

    # accuracy, not speed, is measured here: every path whose kernels this CPU has runs
    # (allow_slow), and a model it would compute wrongly is refused with the fix
    def pi(model_dir, precision, use_openvino=False):
        return lambda: du.PaddleInferencePredictor(model_dir, threads=args.threads,
                                                   precision=precision, use_openvino=use_openvino,
                                                   allow_slow=True)

    def ort(path, precision):
        return lambda: du.OnnxPredictor(path, args.threads, precision=precision, allow_slow=True)

    params = lambda d: _size_mb(os.path.join(d, "model.pdiparams"))  # noqa: E731
    # (variant, evaluated with, predictor factory, compared with, time to make, params MB, .nb's)
    PI = "Paddle Inference oneDNN"
    variants = [("fp32", PI, pi(fp32_dir, "fp32"), None, None,
                 params(fp32_dir), lite(fp32_dir, "arm", tag="fp32"),
                 lite(fp32_dir, "x86", tag="fp32")),
                ("bf16", "Paddle Inference oneDNN", pi(fp32_dir, "bf16"), PI, None, None,
                 None, None)]
    for i, algo in enumerate(args.algo):
        d = ptq_dirs[algo]
        first = i == 0
        name = "exact int8 (PalQuant)" if exact else "PTQ int8 ({})".format(algo)
        variants.append((name, "Paddle Inference oneDNN int8", pi(d, "int8"), PI, made[algo],
                         params(d), lite(lite_arm_ptq_dir(args.save_dir), "arm", tag="ptq")
                         if first else None,
                         lite(d, "x86", tag="ptq") if first else None))
        variants.append((name, "Paddle Inference (simulated int8)",
                         lambda d=d: du.PaddleInferencePredictor(d, use_mkldnn=False,
                                                                 threads=args.threads),
                         PI, None, None, None, None))
        if first and du.openvino_available():
            variants.append(("{}, QDQ form".format(name),
                             "Paddle Inference OpenVINO int8",
                             pi(d, "int8", use_openvino=True), PI, made["qdq"],
                             _size_mb(du.openvino_int8_paths(d)[1]), None, None))
    variants += [
        ("fp32", "ONNX Runtime", ort(onnx_fp32, "fp32"), None, None, _size_mb(onnx_fp32), None,
         None),
        ("exact int8 (ConvInteger)" if exact else "int8 QDQ (min/max)", "ONNX Runtime int8",
         ort(onnx_int8, "int8"), "ONNX Runtime",
         made["onnx"], _size_mb(onnx_int8), None, None),
        ("weight-only int8 (Lite --quant_model)", "Paddle Lite x86", None, PI, None, None,
         lite(fp32_dir, "arm", "QUANT_INT8", tag="wint8"),
         lite(fp32_dir, "x86", "QUANT_INT8", tag="wint8"))]
    scores = {}
    for name, runtime, factory, against, seconds, params_mb, arm_nb, x86_nb in variants:
        if factory is None:
            factory = (lambda nb=x86_nb: du.LitePredictor(nb)) if x86_nb else None
        predictor = _try(factory, notes, "{} on {}".format(name, runtime)) if factory else None
        if predictor is None and not arm_nb:
            continue
        try:
            score = miou(predictor, val_pairs, transforms, num_classes) if predictor else float("nan")
        except Exception as e:  # a backend failing at run time must not hide the other rows
            notes.append("{} on {} failed at run time: {}".format(
                name, runtime, " ".join(str(e).split())[:300]))
            score = float("nan")
        if against is None:  # an fp32 row: the baseline of its backend
            scores[runtime] = score
        base = scores.get(against or runtime, float("nan"))
        rows.append([name, runtime, "{:.2f}".format(100 * score),
                     "" if against is None else "{:+.2f}".format(100 * (score - base)),
                     "{:.1f}".format(seconds) if seconds is not None else "",
                     "{:.2f}".format(params_mb) if params_mb else "",
                     "{:.2f}".format(_size_mb(arm_nb)) if arm_nb else "",
                     "{:.2f}".format(_size_mb(x86_nb)) if x86_nb else ""])
    for tag, name in (("fp32", "fp32"), ("ptq", "exact int8 (PalQuant)" if exact else "PTQ int8")):
        nb = os.path.join(args.save_dir, "lite_{}_x86.nb".format(tag))
        if args.lite and os.path.isfile(nb):
            score, crash = lite_x86_miou(nb, val_pairs, transforms, num_classes)
            if crash:
                notes.append("{} .nb on Paddle Lite x86: {}".format(name, crash))
            rows.append([name, "Paddle Lite x86 .nb", "{:.2f}".format(100 * score),
                         "{:+.2f}".format(100 * (score - scores.get(PI, float("nan")))),
                         "", "", "", ""])
    print(format_table(["variant", "evaluated with", "mIoU (%)", "change vs fp32 (points)",
                        "time to make (s)", "params file (MB)", "ARM .nb (MB)", "x86 .nb (MB)"],
                       rows))
    print("validation images: {}, calibration images: {}".format(
        len(val_pairs), "none (exact scales)" if exact else len(calib)))
    print("int8 runners: deploy/python/infer.py --model_dir {0} --precision int8 [--use_openvino]; "
          "deploy/onnx/infer.py --model_dir {0} --precision int8".format(ptq_dir))
    for note in notes:
        print("note: " + note)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_path", required=True, help="trained .pdparams")
    parser.add_argument("--save_dir", default="output/quantize")
    parser.add_argument("--calib_batches", type=int, default=16,
                        help="calibration images (batch 1 each) from the training list")
    parser.add_argument("--val_images", type=int, default=1000)
    parser.add_argument("--algo", nargs="+", default=[DEFAULT_ALGO], choices=ALGOS,
                        help="activation calibration of Paddle's PTQ (default {}: {}). The first "
                             "is written to ptq_int8/ (what the runners use), others to "
                             "ptq_int8_<algo>/ for comparison".format(DEFAULT_ALGO, WHY_DEFAULT))
    parser.add_argument("--reduce_range", default="false", choices=["true", "false"],
                        help="true: 7-bit weights in the ONNX Runtime and OpenVINO int8 models, "
                             "for CPUs without VNNI/AMX, whose uint8 x int8 kernels saturate "
                             "8-bit ones (docs/deployment.md 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate", default="true", choices=["true", "false"],
                        help="false: only write the int8 models (no mIoU table, no Lite)")
    parser.add_argument("--lite", default="true", choices=["true", "false"],
                        help="also convert and evaluate the Paddle Lite .nb variants")
    parser.add_argument("--opts", nargs="+", action="extend", default=None)
    args = parser.parse_args(argv)
    args.lite, args.evaluate = args.lite == "true", args.evaluate == "true"
    args.reduce_range = args.reduce_range == "true"
    from paddle_rtseg.exporting.static_graph import pir_active
    if pir_active():
        env = dict(os.environ, FLAGS_enable_pir_api="0")
        from paddle_rtseg_runtime.run_lock import die_with_parent
        return subprocess.call([sys.executable, "-m", "paddle_rtseg.quantize"] +
                               (argv if argv is not None else sys.argv[1:]), env=env,
                               preexec_fn=die_with_parent)
    from paddle_rtseg.cli.errors import run_cli
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
