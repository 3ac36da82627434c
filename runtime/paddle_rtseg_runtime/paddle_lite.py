"""Paddle Lite light-runtime predictor (``.nb``)."""
import os

import numpy as np

from .errors import DeployError
from .model_dir import check_nb
from .predictor import Predictor


class LitePredictor(Predictor):
    """Paddle Lite light runtime on a ``.nb`` (on this machine: an x86 ``.nb``).

    A defect of the paddlelite 2.13 x86 runtime is worked around here (docs/deployment.md §7): a
    predictor that ran one input height/width returns wrong values (relative error ~1) for another,
    so a predictor is kept per input size (the last few sizes). A change of batch size on one
    predictor, batch > 1, and several predictors or models in one process are correct
    (tests/test_arm.py::test_lite_x86_two_models_several_sizes_one_process). The ARM runtime has no
    such defect: one predictor serves a sequence of sizes and batch sizes (tests/test_arm.py).
    Paddle Lite's ``reshape2`` (``lite/operators/reshape_op.cc``, in both runtimes) reuses its
    output shape while its input dims repeat, without reading a ``Shape`` tensor input again; the
    exports have no such reshape (``layers/windows.py``, tests/test_arm.py). The Python ``MobileConfig`` has no thread setting (the C++ API has
    ``set_threads``).
    """
    name = "paddle-lite"

    def __init__(self, nb_path):
        from paddlelite.lite import MobileConfig, create_paddle_predictor
        if not os.path.isfile(nb_path):
            raise DeployError("Paddle Lite model {} does not exist; convert with "
                              "deploy/lite/convert.py (paddle_lite_opt) first.".format(nb_path))
        check_nb(nb_path)  # a random or truncated .nb aborts Lite's loader: refuse it first
        self.nb_path = nb_path
        self._config, self._create = MobileConfig, create_paddle_predictor
        self._predictors = {}

    max_cached_sizes = 4  # a folder of photos of many sizes must not keep every model in memory

    def _predictor(self, size):
        if size not in self._predictors:
            if len(self._predictors) >= self.max_cached_sizes:
                self._predictors.pop(next(iter(self._predictors)))  # the oldest size
            config = self._config()
            config.set_model_from_file(self.nb_path)
            self._predictors[size] = self._create(config)
        return self._predictors[size]

    def __call__(self, x):
        predictor = self._predictor(tuple(x.shape[1:]))
        predictor.get_input(0).from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        predictor.run()
        return np.array(predictor.get_output(0).numpy(), copy=True)  # not a view of Lite's buffer
