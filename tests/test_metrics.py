"""paddle_rtseg_runtime.metrics (the scores of the quantize tables, camvid_deploy and the precision
tests) against PaddleSeg's own ``calculate_area`` / ``mean_iou``."""
import numpy as np
import paddle
from paddleseg.utils import metrics as pseg

from paddle_rtseg_runtime.metrics import Scores, confusion, miou


def paddleseg_miou(preds, labels, num_classes, ignore_index=255):
    areas = [pseg.calculate_area(paddle.to_tensor(p[None, None].astype("int64")),
                                 paddle.to_tensor(l[None, None].astype("int64")), num_classes,
                                 ignore_index=ignore_index) for p, l in zip(preds, labels)]
    return float(pseg.mean_iou(*(sum(a[k] for a in areas) for k in range(3)))[1])


def random_maps(rng, num_classes, n=3, shape=(17, 23)):
    preds = [rng.integers(0, num_classes, shape) for _ in range(n)]
    labels = [np.where(rng.random(shape) < 0.1, 255, rng.integers(0, num_classes, shape))
              for _ in range(n)]
    return preds, labels


def test_miou_equals_paddleseg_when_every_class_occurs():
    rng = np.random.default_rng(0)
    preds, labels = random_maps(rng, 5)
    # predictions right on 60 % of the pixels, so the IoUs differ from chance
    preds = [np.where(rng.random(p.shape) < 0.6, np.where(l == 255, 0, l), p)
             for p, l in zip(preds, labels)]
    scores = Scores(5)
    for p, l in zip(preds, labels):
        scores.add(p, l)
    assert scores.hist.sum() == sum(int((l != 255).sum()) for l in labels)
    assert abs(scores.miou() - paddleseg_miou(preds, labels, 5)) < 1e-6
    hist = sum(confusion(l, p, 5) for p, l in zip(preds, labels))
    assert (hist == scores.hist).all() and miou(hist) == scores.miou()


def test_a_class_absent_from_the_labels_is_left_out_where_paddleseg_counts_zero():
    rng = np.random.default_rng(1)
    preds, labels = random_maps(rng, 4)
    labels = [np.where(l == 3, 0, l) for l in labels]  # class 3 only in the predictions
    scores = Scores(4)
    for p, l in zip(preds, labels):
        scores.add(p, l)
    iou = np.diag(scores.hist) / (scores.hist.sum(0) + scores.hist.sum(1) - np.diag(scores.hist))
    assert iou[3] == 0 and abs(scores.miou() - iou[:3].mean()) < 1e-9
    assert abs(paddleseg_miou(preds, labels, 4) - iou.mean()) < 1e-6


def test_labels_at_or_above_num_classes_and_agreement():
    label = np.array([[0, 1, 7], [255, 1, 0]])
    pred = np.array([[0, 0, 1], [1, 1, 0]])
    scores = Scores(2)
    scores.add(pred, label, reference=np.array([[0, 0, 1], [0, 0, 0]]))
    assert scores.hist.tolist() == [[2, 0], [1, 1]] and scores.agree == [4 / 6]
