"""Each paddleseg-2.8-on-Paddle-3 fix: the original fails, the fixed one works."""
import importlib

import numpy as np
import paddle
import pytest
from paddleseg.models.losses import CrossEntropyLoss
from paddleseg.utils import metrics

from paddle_rtseg import compat

pytestmark = pytest.mark.skipif(not compat.APPLIED, reason="this Paddle needs no fixes")


def test_cross_entropy_dtype_promotion():
    loss = CrossEntropyLoss()
    logit = paddle.randn([2, 3, 4, 4])
    label = paddle.randint(0, 3, [2, 4, 4], dtype="int64")
    with pytest.raises(TypeError):
        original = compat.ORIGINALS["CrossEntropyLoss._post_process_loss"]
        raw = paddle.nn.functional.cross_entropy(logit.transpose([0, 2, 3, 1]), label.unsqueeze(-1),
                                                 reduction="none", ignore_index=255)
        original(loss, logit, label, None, raw)
    value = loss(logit, label)
    expected = paddle.nn.functional.cross_entropy(logit.transpose([0, 2, 3, 1]), label.unsqueeze(-1))
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)


def test_train_loss_list_is_indexable():
    train = importlib.import_module("paddleseg.core.train")
    logits = [paddle.randn([1, 3, 4, 4])]
    labels = paddle.randint(0, 3, [1, 4, 4], dtype="int64")
    losses = {"types": [CrossEntropyLoss()], "coef": [1.0]}
    original = compat.ORIGINALS["core.train.loss_computation"](logits, labels, None, losses)
    with pytest.raises(IndexError):
        [loss.numpy()[0] for loss in original]  # what paddleseg's train loop logs
    fixed = train.loss_computation(logits, labels, None, losses)
    assert [loss.numpy()[0] for loss in fixed] == pytest.approx([float(original[0])])


def test_calculate_area_concatenates():
    pred = paddle.to_tensor(np.array([[[0, 1], [2, 2]]]))
    label = paddle.to_tensor(np.array([[[0, 1], [2, 255]]]))
    with pytest.raises(ValueError):
        compat.ORIGINALS["metrics.calculate_area"](pred, label, 3)
    intersect, pred_area, label_area = metrics.calculate_area(pred, label, 3)
    assert intersect.numpy().tolist() == [1, 1, 1]
    assert pred_area.numpy().tolist() == [1, 1, 1]
    assert label_area.numpy().tolist() == [1, 1, 1]
