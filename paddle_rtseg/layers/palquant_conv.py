"""PalQuant's quantized convolution (Hu et al., "PalQuant: Accelerating High-precision Networks on
Low-precision Accelerators", ECCV 2022; code huqinghao/PalQuant ``quant_conv.py``, based on EWGS).

:class:`QConv` is a convolution whose weights and input activations pass through learnable interval
quantizers before the convolution; the result is rescaled by a learned ``|output_scale|``:

* weights: ``w_hat = clamp((w - lW) / (uW - lW), 0, 1)``, rounded to ``weight_levels`` levels,
  mapped to [-1, 1] (``(w_hat - 0.5) * 2``; 4 levels give {-1, -1/3, 1/3, 1}, no zero);
* activations: ``x_hat = clamp((x - lA) / (uA - lA), 0, 1)``, rounded to ``act_levels`` levels in
  [0, 1];
* output: ``conv(x_hat, w_hat) * |output_scale|``.

Rounding is to the nearest level, ties to even (``torch.round``), straight-through in backward
(gradient 1); clamping passes the gradient where
``0 <= v <= 1``, both ends included, as ``torch.clamp`` does (``paddle.clip`` excludes them, which
would cut the gradient of every activation sitting at ``lA = min(x)``, i.e. every ReLU zero).

The quantizer is initialised on one training batch (:func:`init_quantizers`, the authors'
``init_quant_model``): ``uW = 3 std(w)``, ``lW = -3 std(w)``, ``uA = 3 std(x) / sqrt(1 - 2/pi)``,
``lA = min(x)`` (std unbiased, as ``torch.std``), then ``output_scale = mean|conv(x, w)| /
mean|conv(x_hat, w_hat)|`` so the quantized output starts at the full-precision magnitude.

State-dict names are the authors': ``weight`` (``bias``), ``uW lW uA lA output_scale`` (0-D), and
the buffers ``init`` (1 while initialising, else 0) and ``bkwd_scaling_factorW/A`` (kept for key
parity; the authors' code never uses them: its backward is plain straight-through).
``weight_levels=None`` / ``act_levels=None`` leave that side in full precision (no parameters).

Exported (after :meth:`QConv.prepare_export`), a QConv runs in its integer form, the same function:
``conv(k_a, K) * |output_scale| / ((act_levels - 1) (weight_levels - 1))`` with ``k_a`` the
activation's level index (0 .. act_levels - 1, rounded in the graph) and ``K = 2 k_w -
(weight_levels - 1)`` the odd integer of each weight level (4 levels: -3 -1 1 3), stored as the
filter. Both are small integers, so the convolution is exact in float32 and an int8 kernel given
the scale "one per integer" computes it exactly (:mod:`paddle_rtseg.quantization.palquant_int8`);
the weight quantizer is no longer evaluated at run time.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .materialize import exporting, materialize

INTEGER_WEIGHT_PREFIX = "palquant_integer_weight"  # names of the exported integer filters

__all__ = ["QConv", "QConv1x1", "QConv3x3", "clamp01", "round_half_even", "round_to_levels",
           "ste_round", "quantize_weight", "quantize_act", "init_quantizers",
           "split_quantizer_parameters", "QUANTIZER_PARAMETERS"]

QUANTIZER_PARAMETERS = ("lW", "uW", "lA", "uA", "output_scale")


def clamp01(v):
    """``clip(v, 0, 1)`` whose gradient is 1 on the closed interval [0, 1] (``torch.clamp``'s)."""
    inside = paddle.logical_and(v >= 0, v <= 1).astype(v.dtype)
    return v * inside + (paddle.clip(v, 0.0, 1.0) * (1 - inside)).detach()


def round_half_even(v):
    """``torch.round`` (ties to even, as ONNX ``Round`` and int8 ``QuantizeLinear`` do);
    ``paddle.round`` rounds ties away from zero, and its kernel is ~100x slower than ``floor``
    (Paddle 3.0 CPU, native and oneDNN: 44 rounds took 83% of a PalQuant ResNet-18's Paddle
    Inference time). Exact for |v| < 2**23: ``v - floor(v)`` is exact there. Elementwise ops every
    backend has (no ``sign``: Paddle Lite x86 has no kernel; no ``abs`` of a difference: Lite x86
    fuses it into a sub it cannot run)."""
    r = paddle.floor(v)
    frac = v - r
    odd = r - paddle.floor(r * 0.5) * 2  # 1 for odd r, else 0
    return r + (frac > 0.5).astype(v.dtype) + (frac == 0.5).astype(v.dtype) * odd


# 1.5 * 2**23: a float32 of that size has no fraction bits, so ``v + ROUNDER`` is rounded to an
# integer by the addition itself, to nearest with ties to even (IEEE 754's default mode)
ROUNDER = 12582912.0


def round_to_levels(v):
    """:func:`round_half_even` in two float32 ops, ``(v + 1.5 * 2**23) - 1.5 * 2**23``: the same
    values for |v| <= 2**22 (every level index here: ``clip(., 0, 1) * (levels - 1)``), and
    faster (a PalQuant ResNet-18's dygraph inference 0.75-0.80x, its training forward+backward
    0.85-0.90x: ``scripts/dygraph_probes.py rounding``, docs/training_speed.md). Used in dygraph
    and in ``to_static``'s programs (Paddle's executor runs both ops); another engine's graph
    optimizer may fold ``(v + c) - c`` to ``v`` (OpenVINO merges additions of constants), so the
    exported integer form keeps :func:`round_half_even`. Other dtypes (AMP's
    float16/bfloat16, float64) take :func:`round_half_even` too: the constant is float32's."""
    if v.dtype != paddle.float32:
        return round_half_even(v)
    return (v + ROUNDER) - ROUNDER


def ste_round(v, levels):
    """``round(v * (levels - 1)) / (levels - 1)`` forward (ties to even, ``torch.round``), identity
    backward (straight-through).

    ``v + (q - v).detach()`` equals ``q`` exactly: for ``v`` within half a step of ``q > 0``,
    ``q / 2 <= v <= 2 q`` so ``q - v`` is exact (Sterbenz), and so is the sum."""
    q = round_to_levels(v * (levels - 1)) / (levels - 1)
    return v + (q - v).detach()


def _to_levels(v, levels, differentiable):
    if differentiable:
        return ste_round(clamp01(v), levels)
    # the same values with a few ops (eval / export): clip, and rounding without the STE terms
    return round_to_levels(paddle.clip(v, 0.0, 1.0) * (levels - 1)) / (levels - 1)


def quantize_weight(weight, lower, upper, levels, differentiable=True):
    """Weights to ``levels`` values in [-1, 1] through the interval [lower, upper]."""
    return (_to_levels((weight - lower) / (upper - lower), levels, differentiable) - 0.5) * 2


def quantize_act(x, lower, upper, levels, differentiable=True):
    """Activations to ``levels`` values in [0, 1] through the interval [lower, upper]."""
    return _to_levels((x - lower) / (upper - lower), levels, differentiable)


def _std(x):
    """Unbiased standard deviation of all elements (``torch.std``; ``paddle.std`` logs a type
    promotion warning on every call)."""
    centred = x - x.mean()
    return (centred * centred).sum().divide(paddle.full([], x.size - 1, x.dtype)).sqrt()


def _scalar(layer, value):
    return layer.create_parameter([], default_initializer=nn.initializer.Constant(value))


class QConv(nn.Conv2D):
    """Conv2D with learnable-interval weight/activation quantizers and a learned output scale
    (the authors' ``QConv``); arguments as ``nn.Conv2D`` plus the level counts (2**bits)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, weight_levels=4, act_levels=4):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias_attr=None if bias else False)
        for name, levels in (("weight_levels", weight_levels), ("act_levels", act_levels)):
            if levels is not None and (not isinstance(levels, int) or isinstance(levels, bool)
                                       or levels < 2):
                raise ValueError("QConv {} must be an integer >= 2 (2**bits) or None (full "
                                 "precision), got {!r}".format(name, levels))
        self.weight_levels, self.act_levels = weight_levels, act_levels
        if weight_levels is not None:
            self.uW, self.lW = _scalar(self, 0.0), _scalar(self, 0.0)
            self.register_buffer("bkwd_scaling_factorW", paddle.zeros([], "float32"))
        if act_levels is not None:
            self.uA, self.lA = _scalar(self, 0.0), _scalar(self, 0.0)
            self.register_buffer("bkwd_scaling_factorA", paddle.zeros([], "float32"))
        self.register_buffer("init", paddle.zeros([1], "int64"))
        self.output_scale = _scalar(self, 1.0)
        self._initializing = False
        self._exported = None  # set by prepare_export

    @property
    def quantized(self):
        return self.weight_levels is not None or self.act_levels is not None

    def _conv(self, x, weight):
        return F.conv2d(x, weight, self.bias, self._stride, self._padding, self._dilation,
                        self._groups)

    def quantized_weight(self):
        if self.weight_levels is None:
            return self.weight
        return quantize_weight(self.weight, self.lW, self.uW, self.weight_levels, self.training)

    def quantized_act(self, x):
        if self.act_levels is None:
            return x
        return quantize_act(x, self.lA, self.uA, self.act_levels, self.training)

    @paddle.no_grad()
    def initialize(self, x):
        """Set the quantizer from this batch ``x`` (the authors' ``QConv.initialize``)."""
        if self.weight_levels is not None:
            std = _std(self.weight)
            self.uW.set_value(std * 3.0)
            self.lW.set_value(-std * 3.0)
        if self.act_levels is not None:
            self.uA.set_value(_std(x) / math.sqrt(1 - 2 / math.pi) * 3.0)
            self.lA.set_value(x.min())
        q_out = self._conv(self.quantized_act(x), self.quantized_weight())
        out = self._conv(x, self.weight)
        self.output_scale.set_value(out.abs().mean() / q_out.abs().mean())

    def forward(self, x):
        if exporting(self):
            return self._forward_integer(x)
        if self._initializing:
            self.initialize(x)
        return self._conv(self.quantized_act(x), self.quantized_weight()) * \
            paddle.abs(self.output_scale)

    @paddle.no_grad()
    def integer_weight(self):
        """``(K, step)``: the weight levels as odd integers ``K`` (``quantized_weight() == K *
        step``, ``step = 1 / (weight_levels - 1)``), or the float weight and 1 when the weights
        are not quantized."""
        if self.weight_levels is None:
            return self.weight.detach(), 1.0
        steps = self.weight_levels - 1
        k = round_half_even(paddle.clip((self.weight - self.lW) / (self.uW - self.lW), 0.0, 1.0)
                            * steps)
        return k * 2 - steps, 1.0 / steps

    def integer_act(self, x):
        """The activation's level index ``round(clip((x - lA) / (uA - lA), 0, 1) (act_levels -
        1))`` (``quantized_act(x) == index * step``); ``x`` itself when not quantized."""
        if self.act_levels is None:
            return x
        return round_half_even(paddle.clip((x - self.lA) / (self.uA - self.lA), 0.0, 1.0)
                               * (self.act_levels - 1))

    def prepare_export(self):
        """Materialize the integer filter ``K`` (named ``palquant_integer_weight...`` when the
        activations are quantized too, which the exact int8 quantization looks for) and the
        output scale ``|output_scale| * step_w *
        step_a`` for the exported integer form (module docstring)."""
        weight, step = self.integer_weight()
        act_step = 1.0 if self.act_levels is None else 1.0 / (self.act_levels - 1)
        scale = paddle.abs(self.output_scale).reshape([1]) * (step * act_step)
        # only a conv with both sides quantized is an integer conv (the exact int8 programs
        # look for this name); one side alone stays a float conv with integer-valued operands
        name = paddle.utils.unique_name.generate(INTEGER_WEIGHT_PREFIX) \
            if self.weight_levels is not None and self.act_levels is not None else None
        self._exported = (materialize(self, "export_integer_weight", weight, global_name=name),
                          materialize(self, "export_output_scale", scale),
                          None if self.bias is None else materialize(
                              self, "export_bias", self.bias * paddle.abs(self.output_scale)))

    def _forward_integer(self, x):
        weight, scale, bias = self._exported
        out = F.conv2d(self.integer_act(x), weight, None, self._stride, self._padding,
                       self._dilation, self._groups) * scale
        return out if bias is None else out + bias.reshape([1, -1, 1, 1])

    def extra_repr(self):
        return super().extra_repr() + ", weight_levels={}, act_levels={}".format(
            self.weight_levels, self.act_levels)


def QConv3x3(in_channels, out_channels, stride=1, groups=1, dilation=1, **levels):
    """3x3 QConv, padding 1, no bias (the authors' ``QConv3x3``)."""
    return QConv(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                 groups=groups, **levels)


def QConv1x1(in_channels, out_channels, stride=1, groups=1, **levels):
    """1x1 QConv, no bias (the authors' ``QConv1x1``)."""
    return QConv(in_channels, out_channels, 1, stride=stride, groups=groups, **levels)


def init_quantizers(model, *inputs):
    """Initialise every :class:`QConv` of ``model`` on one training batch (the authors'
    ``init_quant_model``): in train mode (so BatchNorm normalises with, and updates its running
    statistics from, this batch, once), each QConv initialises on the input it receives, after
    the layers before it were initialised. Returns the model's output on the batch; ``init``
    buffers are 1 during the pass and 0 after it, as in the authors' code."""
    qconvs = [m for m in model.sublayers(include_self=True) if isinstance(m, QConv)]
    if not qconvs:
        raise ValueError("{} has no QConv layer to initialise".format(type(model).__name__))
    was_training = model.training
    model.train()
    try:
        for m in qconvs:
            m._initializing = True
            m.init.set_value(paddle.ones([1], "int64"))
        with paddle.no_grad():
            out = model(*inputs)
    finally:
        for m in qconvs:
            m._initializing = False
            m.init.set_value(paddle.zeros([1], "int64"))
        if not was_training:
            model.eval()
    return out


def split_quantizer_parameters(model):
    """``(model_parameters, quantizer_parameters)`` for the authors' two optimizers (SGD for the
    weights, Adam for ``lW uW lA uA output_scale``); every trainable parameter is in one list."""
    quant_ids = set()
    quant = []
    for m in model.sublayers(include_self=True):
        if isinstance(m, QConv):
            for name in QUANTIZER_PARAMETERS:
                p = getattr(m, name, None)
                if p is not None and id(p) not in quant_ids:
                    quant_ids.add(id(p))
                    quant.append(p)
    rest = [p for p in model.parameters() if id(p) not in quant_ids]
    return rest, quant
