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


def test_sklearn_is_imported_on_first_use_only():
    """``import paddle_rtseg`` leaves scikit-learn (1.6 s of SciPy and pandas) unimported; PaddleSeg's
    one user of it, ``metrics.auc_roc``, still gets the real ``roc_auc_score`` on first use, and an
    ``import sklearn`` after that is the real package."""
    import subprocess
    import sys
    code = (
        "import sys, numpy as np\n"
        "import paddle_rtseg\n"
        "from paddleseg.utils import metrics\n"
        "assert 'sklearn.base' not in sys.modules and 'scipy.stats' not in sys.modules\n"
        "rng = np.random.default_rng(0)\n"
        "logits = rng.random((40, 2, 1, 1)).astype('float32')\n"
        "label = rng.integers(0, 2, (40, 1, 1, 1))\n"
        "auc = metrics.auc_roc(logits, label, 2)\n"
        "from sklearn.metrics import roc_auc_score\n"
        "import sklearn, sklearn.svm\n"
        "assert type(sys.modules['sklearn']).__name__ == 'module', type(sys.modules['sklearn'])\n"
        "expected = roc_auc_score(label.reshape(-1), logits.transpose(0, 2, 3, 1).reshape(-1, 2)[:, 1])\n"
        "assert abs(auc - expected) < 1e-9 and 0 < auc < 1, (auc, expected)\n"
        "print('ok', auc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
