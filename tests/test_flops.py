"""The MAC counter: layer and functional convs (parameter filters too), linears and every matmul
form, checked by hand; the model state is restored and nothing stays patched."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddle_rtseg.benchmarks import flops
from paddle_rtseg.layers.efficient_attention import EfficientSelfAttention


class _Attention(nn.Layer):
    def __init__(self, channels, heads, sr, hw):
        super().__init__()
        self.attn, self.hw = EfficientSelfAttention(channels, heads, sr_ratio=sr), hw

    def forward(self, x):
        return self.attn(x, *self.hw)


def test_efficient_attention_by_hand():
    n, c, sr = 16 * 16, 64, 2
    n_kv = n // sr ** 2
    total, by_op = flops.count_macs(_Attention(c, 2, sr, (16, 16)), [1, n, c], by_op=True)
    assert by_op == {"linear": n * c * c + n_kv * c * 2 * c + n * c * c,  # q, kv, proj
                     "conv2d": n_kv * c * c * sr * sr,                    # spatial reduction
                     "matmul": 2 * n * n_kv * c}                          # q k^T and attn v
    assert total == sum(by_op.values())


class _Functional(nn.Layer):
    """A conv whose filter is computed from parameters, ``@``, bmm, a depth-wise and a transposed
    conv."""

    def __init__(self):
        super().__init__()
        self.a = self.create_parameter([32, 4])
        self.b = self.create_parameter([4, 3 * 3])
        self.dw = nn.Conv2D(8, 8, 3, padding=1, groups=8)
        self.up = nn.Conv2DTranspose(8, 2, 2, stride=2)

    def forward(self, x):
        weight = (self.a @ self.b).reshape([8, 4, 3, 3])
        y = F.conv2d(x, weight, padding=1)                    # 1, 8, 10, 12
        t = y.flatten(2)                                      # 1, 8, 120
        z = paddle.bmm(t, t.transpose([0, 2, 1]))             # 1, 8, 8
        return self.up(self.dw(y)) + z.sum()


def test_functional_conv_matmul_bmm_depthwise_and_transposed_by_hand():
    total, by_op = flops.count_macs(_Functional(), [1, 4, 10, 12], by_op=True)
    assert by_op.get("matmul") == 32 * 9 * 4
    assert by_op.get("conv2d", 0) + by_op.get("depthwise_conv2d", 0) == \
        8 * 10 * 12 * 4 * 9 + 8 * 10 * 12 * 9
    assert by_op.get("bmm") == 8 * 8 * 120
    assert by_op.get("conv2d_transpose", 0) + by_op.get("depthwise_conv2d_transpose", 0) == \
        8 * 10 * 12 * 2 * 4
    assert total == sum(by_op.values())


def test_state_restored_and_nothing_left_patched():
    model = _Attention(32, 1, 1, (4, 4))
    model.train()
    matmul, c_matmul = paddle.Tensor.__matmul__, paddle._C_ops.matmul
    with pytest.raises(RuntimeError):
        with flops._counting({}):
            raise RuntimeError
    flops.count_macs(model, [1, 16, 32])
    assert model.training
    assert paddle.Tensor.__matmul__ is matmul and paddle._C_ops.matmul is c_matmul


def test_sgemm_gflops_is_positive():
    assert flops.sgemm_gflops(n=128, repeats=2) > 0
    assert flops.achieved_gflops(10 ** 9, 2.0) == 1.0


def test_bitops_of_palquant_resnets_by_hand():
    """count_bitops: a quantized conv's MACs at b_w x b_a bits, the rest at 32 x 32. ResNet-18's
    low-bit convs by hand (every 3x3 and downsample conv; the stem and the classifier stay fp):
    W2A2 with G = 4 parallel groups has G x the MACs at 1/4 of the bits of W4A4, so the same
    low-bit BitOPs (the paper's comparison), and G = 2 half of them."""
    from paddle_rtseg.models import PalQuantResNet

    def by_hand(groups, size=64, base=8):
        macs, h, c_in = 0, size // 4, base * groups  # after the stem's /2 conv and /2 max-pool
        for stage, width in enumerate([base * groups * 2 ** i for i in range(4)]):
            stride = 1 if stage == 0 else 2
            h_out = h // stride
            shuffle = 0 if stage == 0 else h * h * c_in * c_in // groups  # CyclicShuffle 1x1
            first = h_out * h_out * width * (c_in // groups * 9 + width // groups * 9)
            down = h_out * h_out * width * c_in // groups if (stride != 1 or c_in != width) else 0
            macs += shuffle + first + down + h_out * h_out * width * width // groups * 9 * 2
            h, c_in = h_out, width
        return macs

    counts = {}
    for groups, levels in ((1, None), (1, 16), (1, 4), (2, 4), (4, 4)):
        model = PalQuantResNet(18, groups=groups, weight_levels=levels, act_levels=levels,
                               num_classes=10, base_channels=8)
        counts[groups, levels] = c = flops.count_bitops(model, [1, 3, 64, 64])
        assert c["macs"] == flops.count_macs(model, [1, 3, 64, 64])
        if levels is None:
            assert c["low_bit_macs"] == {} and c["bitops"] == c["macs"] * 32 * 32
            continue
        bits = {16: 4, 4: 2}[levels]
        key = "W{0}A{0}".format(bits)
        assert c["low_bit_macs"] == {key: by_hand(groups)}
        assert c["low_bit_bitops"] == by_hand(groups) * bits * bits
        assert c["bitops"] == c["low_bit_bitops"] + (c["macs"] - by_hand(groups)) * 32 * 32
    assert counts[4, 4]["low_bit_bitops"] == counts[1, 16]["low_bit_bitops"]
    assert 2 * counts[2, 4]["low_bit_bitops"] == counts[1, 16]["low_bit_bitops"]
