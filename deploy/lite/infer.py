"""Paddle Lite runner for an x86 ``.nb`` (the Lite runtime this machine can execute), same
interface as deploy/python/infer.py. On ARM devices use the C++ demo in deploy/lite/cpp.

    python deploy/lite/convert.py --model_dir output/export --target x86
    python deploy/lite/infer.py --model_dir output/export --image_path images/ --save_dir out \
        [--nb_file output/export/model_x86.nb]

The folder may hold only ``deploy.yaml`` and ``model_x86.nb`` (what is shipped to a device).
Needs only paddlelite (cp310 x86-64 wheel), numpy, opencv-python, pyyaml and pillow.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def main(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--nb_file", default=None, help="default: <model_dir>/model_x86.nb")
    args = parser.parse_args(argv)
    nb_file = args.nb_file or os.path.join(args.model_dir, "model_x86.nb")
    return common.run(args, lambda info: common.du.LitePredictor(nb_file), program_files=False)


if __name__ == "__main__":
    sys.exit(main())
