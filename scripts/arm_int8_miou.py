"""int8 on the real Paddle Lite ARM kernels: mIoU on the synthetic validation set per model family.

    PADDLE_LITE_ARM_DIR=../shared/paddle-lite-armv8 python scripts/arm_int8_miou.py \
        [--families rtformer,seaformer,segformer_pp] [--iters 300] [--save_dir output/arm_int8]

Per family (the tiny variants of tests/test_deploy.py's FAMILIES, the list every backend test uses):
trains on the synthetic set (``paddle_rtseg.cli.train``), runs ``python -m paddle_rtseg.quantize`` (fp32
export, Paddle static PTQ, Lite weight-only int8, ARM ``.nb`` of each), then runs the fp32, PTQ
int8 and weight-only int8 ARM ``.nb`` over the validation set on the ARM kernels (the C++ runner
under qemu, runtime/paddle_rtseg_runtime/lite_arm.py) and prints their mIoU next to fp32 dygraph's.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _module(*args, **kw):
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, **kw)
    if proc.returncode != 0:
        sys.exit("error: {} failed:\n{}".format(" ".join(map(str, args[:1])), proc.stderr[-3000:]))
    return proc.stdout


class Replay:
    """A predictor that returns precomputed outputs in order (the ARM runner does a whole list in
    one emulated process)."""

    def __init__(self, outputs):
        self.outputs = iter(outputs)

    def __call__(self, x):
        return next(self.outputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="rtformer,seaformer,segformer_pp")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--calib_batches", type=int, default=16)
    parser.add_argument("--save_dir", default=os.path.join(ROOT, "output", "arm_int8"))
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the configs' dataset_root (data/synthetic) is relative to the checkout

    import paddle
    import paddle_rtseg  # noqa: F401
    from paddleseg.cvlibs import SegBuilder
    from paddle_rtseg import build_model, load_checkpoint
    import paddle_rtseg_runtime as du
    from paddle_rtseg.config import load_config
    from paddle_rtseg_runtime import lite_arm
    from paddle_rtseg.quantization.ptq import miou
    from test_deploy import FAMILIES

    reason = lite_arm.unavailable_reason()
    if reason:
        sys.exit("error: " + reason)
    tools = lite_arm.build_tools()
    rows = []
    for family in args.families.split(","):
        config, overrides = FAMILIES[family]
        opts = ["{}={}".format("model." + k, v) for k, v in overrides.items()]
        out = os.path.join(args.save_dir, family)
        start = time.time()
        weights = os.path.join(out, "train", "iter_{}".format(args.iters), "model.pdparams")
        if not os.path.isfile(weights):
            _module("paddle_rtseg.train", "--config", config, "--save_dir",
                    os.path.join(out, "train"), "--iters", args.iters, "--save_interval",
                    args.iters, "--seed", 0, "--log_iters", 100, *(["--opts", *opts] if opts else []))
        quant = os.path.join(out, "quant")
        nbs = [os.path.join(quant, "lite_{}_arm.nb".format(t)) for t in ("fp32", "ptq", "wint8")]
        if not all(os.path.isfile(nb) for nb in nbs):  # a rerun reuses finished steps
            report = _module("paddle_rtseg.quantize", "--config", config, "--model_path", weights,
                             "--save_dir", quant, "--calib_batches", args.calib_batches,
                             *(["--opts", *opts] if opts else []))
            print("== {} (python -m paddle_rtseg.quantize)\n{}".format(family, report), flush=True)

        cfg = load_config(config, opts=opts)
        val = SegBuilder(cfg).val_dataset
        pairs = [tuple(p) for p in val.file_list]
        transforms = du.read_deploy_yaml(os.path.join(quant, "fp32"))["transforms"]
        inputs = [du.preprocess(du.read_image(p), transforms) for p, _ in pairs]
        model = build_model(config, **overrides)
        load_checkpoint(model, weights)
        model.eval()
        with paddle.no_grad():
            dygraph = [model(paddle.to_tensor(x))[0].numpy() for x in inputs]
        scores = {"fp32 dygraph": miou(Replay(dygraph), pairs, transforms, val.num_classes)}
        for name, nb in (("fp32 ARM .nb", "lite_fp32_arm.nb"), ("PTQ int8 ARM .nb", "lite_ptq_arm.nb"),
                         ("weight-only int8 ARM .nb", "lite_wint8_arm.nb")):
            outputs = lite_arm.run_raw(os.path.join(quant, nb), inputs, tools)
            scores[name] = miou(Replay(outputs), pairs, transforms, val.num_classes)
            if name.startswith("fp32"):
                err = max(float(np.abs(o - r).max() / np.abs(r).max()) for o, r in zip(outputs, dygraph))
                scores["fp32 ARM max rel. error"] = err
        base = scores["fp32 dygraph"]
        rows.append([family, "{:.2f}".format(100 * base)] +
                    ["{:.2f} ({:+.2f})".format(100 * scores[k], 100 * (scores[k] - base))
                     for k in ("fp32 ARM .nb", "PTQ int8 ARM .nb", "weight-only int8 ARM .nb")] +
                    ["{:.1e}".format(scores["fp32 ARM max rel. error"]),
                     "{:.0f}".format(time.time() - start)])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    header = ["family", "fp32 dygraph mIoU (%)", "fp32 ARM", "PTQ int8 ARM", "weight-only int8 ARM",
              "fp32 ARM vs dygraph (max rel.)", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(lines))
    print("validation images: {}, training iterations: {}, calibration images: {}".format(
        len(pairs), args.iters, args.calib_batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
