"""Fixes that let paddleseg 2.8.0 train and evaluate on Paddle >= 2.5 (0-D tensors) and 3.x.

Each fix is applied once by :func:`apply` (called on ``import paddle_rtseg``), only where the running
versions need it, and keeps the replaced function in :data:`ORIGINALS` so tests can show the failure
the fix removes:

1. ``CrossEntropyLoss._post_process_loss`` multiplies the float32 mask by ``ones_like(label)`` of
   dtype int64; Paddle 3 refuses the mixed-type product (``TypeError: Type promotion ...``).
2. ``paddleseg.core.train`` logs ``l[0]`` of each loss, but losses became 0-D in Paddle 2.5
   (``IndexError``). The loss list is made 1-D where it is built (``loss_computation``).
3. ``paddleseg.utils.metrics.calculate_area`` concatenates 0-D sums (``ValueError``); it stacks
   them instead.

And one for start-up time, :func:`defer_sklearn`.
"""
import importlib
import importlib.machinery
import importlib.util
import sys
import types

import paddle
import paddle.nn.functional as F

ORIGINALS = {}
APPLIED = []


def _paddle_version():
    if paddle.__version__.startswith("0.0.0"):  # develop builds
        return (99, 0)
    return tuple(int(p) for p in paddle.__version__.split(".")[:2])


def _zero_dim_tensors():
    """Paddle >= 2.5 returns 0-D tensors from full reductions."""
    return _paddle_version() >= (2, 5)


def _post_process_loss(self, logit, label, semantic_weights, loss):
    """paddleseg 2.8 ``CrossEntropyLoss._post_process_loss`` with every factor in float32."""
    if self.avg_non_ignore:
        mask = paddle.cast(label != self.ignore_index, dtype="float32")
    else:
        mask = paddle.ones(label.shape, dtype="float32")
    mask.stop_gradient = True
    label.stop_gradient = True
    if loss.ndim > mask.ndim:
        loss = paddle.squeeze(loss, axis=-1)
    loss = loss * mask
    if semantic_weights is not None:
        loss = loss * semantic_weights
    if self.weight is not None:
        one_hot = F.one_hot(label * paddle.cast(mask, label.dtype), logit.shape[-1])
        coef = paddle.sum(one_hot * self.weight, axis=-1)
    else:
        coef = paddle.ones(label.shape, dtype="float32")
    coef = paddle.cast(coef, "float32")
    if self.top_k_percent_pixels == 1.0:
        return paddle.mean(loss) / (paddle.mean(mask * coef) + self.EPS)
    loss = loss.reshape((-1,))
    top_k_pixels = int(self.top_k_percent_pixels * loss.numel())
    loss, indices = paddle.topk(loss, top_k_pixels)
    coef = paddle.gather(coef.reshape((-1,)), indices)
    coef.stop_gradient = True
    return loss.mean() / (paddle.mean(coef) + self.EPS)


def _one_dim_losses(original):
    def loss_computation(*args, **kwargs):
        return [paddle.reshape(loss, [1]) for loss in original(*args, **kwargs)]

    loss_computation.__doc__ = original.__doc__
    return loss_computation


def calculate_area(pred, label, num_classes, ignore_index=255):
    """paddleseg 2.8 ``metrics.calculate_area`` that stacks the per-class 0-D sums."""
    if len(pred.shape) == 4:
        pred = paddle.squeeze(pred, axis=1)
    if len(label.shape) == 4:
        label = paddle.squeeze(label, axis=1)
    if not pred.shape == label.shape:
        raise ValueError("Shape of `pred` and `label should be equal, but there are {} and {}."
                         .format(pred.shape, label.shape))
    mask = label != ignore_index
    pred_area, label_area, intersect_area = [], [], []
    for i in range(num_classes):
        pred_i = paddle.logical_and(pred == i, mask)
        label_i = label == i
        pred_area.append(paddle.sum(paddle.cast(pred_i, "int64")).reshape([1]))
        label_area.append(paddle.sum(paddle.cast(label_i, "int64")).reshape([1]))
        intersect_area.append(
            paddle.sum(paddle.cast(paddle.logical_and(pred_i, label_i), "int64")).reshape([1]))
    return paddle.concat(intersect_area), paddle.concat(pred_area), paddle.concat(label_area)


class _DeferredModule(types.ModuleType):
    """A stand-in in ``sys.modules`` that imports the real module on its first attribute read."""

    def __getattr__(self, name):
        return getattr(_import_sklearn(self.__name__), name)


def _import_sklearn(name):
    for stand_in in ("sklearn.metrics", "sklearn"):
        if isinstance(sys.modules.get(stand_in), _DeferredModule):
            del sys.modules[stand_in]
    return importlib.import_module(name)


def defer_sklearn():
    """PaddleSeg imports ``sklearn.metrics`` when it starts (``paddleseg/utils/metrics.py``) for
    one function, ``auc_roc``, and importing scikit-learn imports SciPy's stats and pandas: 1.6 of
    the 4.2 s that ``import paddle_rtseg`` took (``python -X importtime``), in every command. Until
    something reads an attribute of ``sklearn`` or ``sklearn.metrics``, both are stand-ins that
    import the real modules then; nothing changes where scikit-learn is already imported or is not
    installed."""
    if "sklearn" in sys.modules or importlib.util.find_spec("sklearn") is None:
        return
    top = _DeferredModule("sklearn")
    top.__spec__ = importlib.util.find_spec("sklearn")
    metrics = _DeferredModule("sklearn.metrics")
    metrics.__spec__ = importlib.machinery.ModuleSpec("sklearn.metrics", None)
    top.metrics = metrics  # what `import sklearn.metrics as m` reads
    sys.modules["sklearn"], sys.modules["sklearn.metrics"] = top, metrics


def apply():
    """Install the fixes the running Paddle needs (idempotent)."""
    if APPLIED or not _zero_dim_tensors():
        return
    from paddleseg.models.losses import cross_entropy_loss
    from paddleseg.utils import metrics

    train_module = importlib.import_module("paddleseg.core.train")
    ce = cross_entropy_loss.CrossEntropyLoss
    ORIGINALS["CrossEntropyLoss._post_process_loss"] = ce._post_process_loss
    ORIGINALS["core.train.loss_computation"] = train_module.loss_computation
    ORIGINALS["metrics.calculate_area"] = metrics.calculate_area

    ce._post_process_loss = _post_process_loss
    train_module.loss_computation = _one_dim_losses(train_module.loss_computation)
    metrics.calculate_area = calculate_area
    APPLIED.extend(ORIGINALS)
