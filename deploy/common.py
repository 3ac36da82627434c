"""The command line every runner in deploy/ shares: a folder of images in, PNG masks and overlays
out, PaddleSeg's pre/post-processing from ``deploy.yaml``. Each runner only says how to build its
predictor.

Everything here comes from the runtime package ``paddle_rtseg_runtime`` (``runtime/``), which does
not import Paddle: on a device, ``pip install ./runtime[onnx]`` (or ``[lite]``) is all the ONNX and
Lite runners need.
"""
import argparse
import os
import sys
import time

try:
    import paddle_rtseg_runtime as du
except ImportError:
    sys.stderr.write("error: the runners need the package paddle_rtseg_runtime: install it with "
                     "`pip install ./runtime[onnx]` (or [lite], [paddle]) from the repository root "
                     "(`make venv` installs it for development).\n")
    sys.exit(2)

MKL_DISPATCH = du.mkl_dispatch.apply()  # before a backend loads MKL (Paddle, Paddle Lite x86)


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model_dir", required=True,
                        help="directory written by `python -m paddle_rtseg.export` (has deploy.yaml)")
    parser.add_argument("--image_path", default=None,
                        help="an image, a folder of images or a video file")
    parser.add_argument("--save_dir", default="output/result", help="where masks/overlays go")
    parser.add_argument("--benchmark", action="store_true",
                        help="print per-image latency (preprocessing excluded)")
    du.add_video_args(parser)
    return parser


def run(args, make_predictor, program_files=True):
    """Segment every image of ``args.image_path`` (or the video, see ``paddle_rtseg_runtime/video.py``) with
    ``make_predictor(info)``; 0 on success. ``program_files=False``: the runner's model is not the
    Paddle program named in deploy.yaml (ONNX, Lite), so ``--model_dir`` needs only deploy.yaml
    besides it."""
    try:
        if du.video_input(args):
            with du.run_lock.run_folder(args.save_dir, recursive=False):
                return run_video(args, make_predictor, program_files)
        info = du.read_deploy_yaml(args.model_dir, program_files)
        images = du.list_images(args.image_path)
        names = du.output_names(images)
        du.check_inputs_kept(images, [os.path.join(args.save_dir, os.path.splitext(n)[0] + suffix)
                                      for n in names for suffix in (".png", "_overlay.jpg")])
        # one run per --save_dir; the runners write only at its top level
        with du.run_lock.run_folder(args.save_dir, recursive=False):
            predictor = make_predictor(info)
            channels = info["input_shape"][1] if info["input_shape"][1] > 0 else 3
            times = []
            for path, name in zip(images, names):
                image = du.read_image(path, channels)
                x = du.preprocess(image, info["transforms"])
                du.check_input(x, info["input_shape"])
                start = time.perf_counter()
                output = predictor(x)
                times.append(time.perf_counter() - start)
                label = du.to_label_map(output, info["output_op"], image.shape[:2])
                du.save_results(label, image, args.save_dir, os.path.splitext(name)[0])
                if args.benchmark:
                    print("{}: {:.1f} ms".format(path, 1000 * times[-1]))
    except (du.DeployError, du.run_lock.RunLockError) as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    print("Segmented {} image(s) into {} ({}; median {:.1f} ms/image)".format(
        len(images), args.save_dir, getattr(predictor, "name", "predictor"),
        1000 * sorted(times)[len(times) // 2]))
    return 0


def run_video(args, make_predictor, program_files=True):
    """Segment a video file (or a folder of frames with ``--save_video``) into an overlay video."""
    path = du.video_input(args)
    info = du.read_deploy_yaml(args.model_dir, program_files)
    channels = info["input_shape"][1] if info["input_shape"][1] > 0 else 3
    if channels != 3:
        raise du.DeployError("The model takes {}-channel images; video frames have 3."
                             .format(channels))
    images = du.list_images(path) if os.path.isdir(path) else None
    source = du.FrameSource(path, images, lambda p: du.read_image(p, channels))
    predictor = make_predictor(info)

    def segment(frame):
        x = du.preprocess(frame, info["transforms"])
        du.check_input(x, info["input_shape"])
        start = time.perf_counter()
        output = predictor(x)
        seconds = time.perf_counter() - start
        return du.to_label_map(output, info["output_op"], frame.shape[:2]), seconds

    du.segment_video(source, segment, args.save_dir, du.color_map(),
                     getattr(predictor, "name", "predictor"),
                     getattr(predictor, "precision", "fp32"), fps=args.video_fps)
    return 0
