"""Time paddle.load against the safe reader on a ~100 MB .pdparams (alternating runs, medians).

    PYTHONPATH=. python scripts/bench_checkpoint_load.py [--mb 100] [--repeats 5]
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import paddle

from paddle_rtseg.weights.checkpoints import read_checkpoint
from paddle_rtseg.weights.safe_pickle import load_paddle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    big = max(1, args.mb * 2 ** 20 // (4 * 256 * 1000))
    state = {"small{}.weight".format(i): paddle.to_tensor(rng.random(64, dtype=np.float32))
             for i in range(300)}  # many small tensors (norms, biases) and some big ones
    state.update({"big{}.weight".format(i): paddle.to_tensor(rng.random((256, 1000), dtype=np.float32))
                  for i in range(big)})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pdparams")
        paddle.save(state, path)
        readers = {"paddle.load (Tensors)": lambda: paddle.load(path),
                   "safe_pickle.load_paddle (Tensors)": lambda: load_paddle(path, return_numpy=False),
                   "paddle.load (numpy)": lambda: paddle.load(path, return_numpy=True),
                   "read_checkpoint (numpy)": lambda: read_checkpoint(path)}
        times = {name: [] for name in readers}
        for _ in range(args.repeats):
            for name, read in readers.items():
                start = time.perf_counter()
                read()
                times[name].append(time.perf_counter() - start)
        print("{:.0f} MB, {} tensors, median of {}:".format(
            os.path.getsize(path) / 2 ** 20, len(state), args.repeats))
    for name, values in times.items():
        print("  {:36s} {:.3f} s".format(name, statistics.median(values)))


if __name__ == "__main__":
    main()
