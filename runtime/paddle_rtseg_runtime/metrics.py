"""Segmentation scores without Paddle: a confusion matrix over the labelled pixels (``ignore_index``
and labels >= ``num_classes`` left out) and the mean IoU over the classes that occur in the labels.

PaddleSeg's ``val`` averages over every class instead, counting a class that is in neither the
labels nor the prediction as IoU 0; the two equal each other whenever every class occurs in the
labels (tests/test_metrics.py checks both against ``paddleseg.utils.metrics``)."""
import numpy as np


def confusion(label, pred, num_classes, ignore_index=255):
    """``(num_classes, num_classes)`` pixel counts, rows the label's class, columns the prediction's."""
    label = np.asarray(label).astype(np.int64)
    keep = (label != ignore_index) & (label < num_classes)
    return np.bincount(num_classes * label[keep] + np.asarray(pred).astype(np.int64)[keep],
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def miou(hist):
    """Mean IoU of a confusion matrix over the classes present in the labels (rows with pixels)."""
    iou = np.diag(hist) / np.maximum(hist.sum(0) + hist.sum(1) - np.diag(hist), 1)
    return float(iou[hist.sum(1) > 0].mean())


class Scores:
    """A running confusion matrix, and the share of pixels that agree with a reference prediction
    (one entry per image) when one is given."""

    def __init__(self, num_classes, ignore_index=255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.hist = np.zeros((num_classes, num_classes), np.int64)
        self.agree = []

    def add(self, pred, label, reference=None):
        self.hist += confusion(label, pred, self.num_classes, self.ignore_index)
        if reference is not None:
            self.agree.append(float((np.asarray(pred) == np.asarray(reference)).mean()))

    def miou(self):
        return miou(self.hist)
