"""PalQuant ResNet (Hu et al., "PalQuant: Accelerating High-precision Networks on Low-precision
Accelerators", ECCV 2022, arXiv 2208.01944; code huqinghao/PalQuant ``quant_resnet.py``).

PalQuant approximates a high-precision network with G parallel low-precision groups learned from
scratch: a ResNet whose every width is multiplied by G and whose every quantized convolution (the
3x3 convs of the basic blocks and the 1x1 downsample convs) is grouped with ``groups=G``, so the
network is G narrow low-bit ResNets side by side. The groups exchange information through
:func:`~paddle_rtseg.layers.channel_shuffle.channel_shuffle` on the main branch of every block with a
downsample path, and through a :class:`~paddle_rtseg.layers.cyclic_shuffle.CyclicShuffle` before
layer2, layer3 and layer4. The stem (7x7 conv, BN, ReLU, 3x3 max-pool) and the classifier stay in
full precision.

State-dict keys are the authors' (``conv1 bn1 layer1.0.conv1 ... shuffle2.conv1.0 ... fc``), with
Paddle's BN buffer names (``_mean``, ``_variance``); :meth:`PalQuantResNet.convert_torch_state_dict`
maps the authors' ``checkpoint.pth.tar`` (DDP ``module.`` prefix) onto them, so
``paddle_rtseg.load_checkpoint(model, "checkpoint.pth.tar")`` loads it without PyTorch.

With ``num_classes=None`` the network is a backbone returning the four stage outputs
(strides 4, 8, 16, 32; ``feat_channels``); registered for PaddleSeg as ``RTSeg_PalQuantResNet18`` and
``RTSeg_PalQuantResNet34``. :class:`PalQuantSeg` (``RTSeg_PalQuantSeg``) puts a light
full-precision head on it and initialises the quantizers on its first training batch.

Known difference from the authors' PyTorch (training only): Paddle's BatchNorm updates its running
variance with the biased batch variance, PyTorch with the unbiased one; outputs, the quantizer
initialisation and everything in eval mode are the same.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models import layers

from ..layers.channel_shuffle import channel_shuffle
from ..layers.cyclic_shuffle import CyclicShuffle
from ..layers.palquant_conv import QConv, QConv1x1, QConv3x3, init_quantizers
from ..layers.shape import spatial_size
from ..registry import register, register_variant

__all__ = ["PalQuantResNet", "PalQuantBasicBlock", "PalQuantSeg", "FirstBatchQuantizerInit",
           "make_palquant_stage", "init_like_the_authors", "DEPTHS"]

DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}  # the authors' resnet18_quant / resnet34_quant


def _bn(channels):
    # PyTorch's BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch, eps 1e-5.
    return nn.BatchNorm2D(channels, momentum=0.9, epsilon=1e-5)


class PalQuantBasicBlock(nn.Layer):
    """The authors' ``QBasicBlock``: ``relu(shuffle(bn2(qconv2(relu(bn1(qconv1(x)))))) +
    shortcut(x))``, both 3x3 QConvs grouped; the channel shuffle runs only when there is a
    downsample path (``stride != 1`` or a change of width)."""

    def __init__(self, in_channels, channels, stride=1, groups=1, weight_levels=4, act_levels=4):
        super().__init__()
        levels = dict(weight_levels=weight_levels, act_levels=act_levels)
        self.conv1 = QConv3x3(in_channels, channels, stride, groups=groups, **levels)
        self.bn1 = _bn(channels)
        self.relu = nn.ReLU()
        self.conv2 = QConv3x3(channels, channels, groups=groups, **levels)
        self.bn2 = _bn(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                QConv1x1(in_channels, channels, stride, groups=groups, **levels), _bn(channels))
        self.groups = groups

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.downsample is not None:
            out = channel_shuffle(out, self.groups)
            x = self.downsample(x)
        return self.relu(out + x)


def init_like_the_authors(layer):
    """The authors' (torchvision's) initialisation of every sublayer of ``layer``: Kaiming-normal
    fan-out convs (QConv included), BN 1/0, and PyTorch's default Linear (uniform
    +-1/sqrt(fan_in))."""
    for m in layer.sublayers(include_self=True):
        if isinstance(m, nn.Conv2D):
            fan_out = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
            nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))(m.weight)
        elif isinstance(m, nn.BatchNorm2D):
            nn.initializer.Constant(1.0)(m.weight)
            nn.initializer.Constant(0.0)(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.weight.shape[0])
            nn.initializer.Uniform(-bound, bound)(m.weight)
            nn.initializer.Uniform(-bound, bound)(m.bias)


def make_palquant_stage(in_channels, channels, num_blocks, stride=1, **block_args):
    """A stage of ``num_blocks`` :class:`PalQuantBasicBlock` (the authors' ``_make_layer``); the
    first may downsample. ``block_args``: ``groups``, ``weight_levels``, ``act_levels``."""
    blocks = [PalQuantBasicBlock(in_channels, channels, stride, **block_args)]
    blocks += [PalQuantBasicBlock(channels, channels, 1, **block_args)
               for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class PalQuantResNet(nn.Layer):
    """PalQuant ResNet-18/34 with ``groups`` parallel low-precision groups (the authors'
    ``QResNet``; ``base_channels`` is their fixed 64, here adjustable for small models).

    Args:
        depth: 18 or 34.
        groups: G, the number of parallel groups (widths are ``base_channels * 2**i * G``).
        weight_levels, act_levels: quantization levels, 2**bits (4 = 2 bit); None = full precision.
        num_classes: classifier outputs; None = backbone (``forward`` returns the 4 stage outputs).
        base_channels: width of the stem and layer1 per group (64 in the paper).
    """

    def __init__(self, depth=18, groups=1, weight_levels=4, act_levels=4, num_classes=1000,
                 base_channels=64, in_channels=3, pretrained=None):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError("PalQuantResNet depth must be one of {}, got {!r}".format(
                sorted(DEPTHS), depth))
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError("PalQuantResNet groups must be a positive integer, got {!r}".format(
                groups))
        if not isinstance(base_channels, int) or base_channels < 1:
            raise ValueError("PalQuantResNet base_channels must be a positive integer, got "
                             "{!r}".format(base_channels))
        self.depth, self.groups, self.num_classes = depth, groups, num_classes
        self.weight_levels, self.act_levels = weight_levels, act_levels
        levels = dict(groups=groups, weight_levels=weight_levels, act_levels=act_levels)
        widths = [base_channels * 2 ** i * groups for i in range(4)]
        self.conv1 = nn.Conv2D(in_channels, widths[0], 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = _bn(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(3, stride=2, padding=1)
        in_ch = widths[0]
        for i, (width, blocks) in enumerate(zip(widths, DEPTHS[depth])):
            if i:
                setattr(self, "shuffle{}".format(i + 1), CyclicShuffle(in_ch, **levels))
            setattr(self, "layer{}".format(i + 1),
                    make_palquant_stage(in_ch, width, blocks, 2 if i else 1, **levels))
            in_ch = width
        self.feat_channels = widths
        self.fc = None
        if num_classes is not None:
            self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()
        if pretrained is not None:
            from ..weights.checkpoints import load_pretrained
            load_pretrained(self, pretrained)

    def _init_weights(self):
        init_like_the_authors(self)

    def forward_features(self, x):
        """The outputs of layer1..layer4 (strides 4, 8, 16, 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(1, 5):
            if i > 1:
                x = getattr(self, "shuffle{}".format(i))(x)
            x = getattr(self, "layer{}".format(i))(x)
            feats.append(x)
        return feats

    def forward(self, x):
        feats = self.forward_features(x)
        if self.fc is None:
            return feats
        return self.fc(feats[-1].mean(axis=[2, 3]))

    def quantized_convs(self):
        return [m for m in self.sublayers() if isinstance(m, QConv)]

    def convert_torch_state_dict(self, torch_state):
        """The authors' state dict (``model.state_dict()``, or ``checkpoint['state_dict']`` of
        ``checkpoint.pth.tar`` with DDP's ``module.`` prefix) -> numpy arrays in our names: BN
        ``running_mean/var`` -> ``_mean/_variance``, ``num_batches_tracked`` dropped, the fc weight
        transposed to Paddle's [in, out]. Keys this model lacks are kept, for load_checkpoint to
        report by name."""
        out = {}
        for key, value in torch_state.items():
            if key.startswith("module."):
                key = key[len("module."):]
            if key.endswith("num_batches_tracked"):
                continue
            key = key.replace(".running_mean", "._mean").replace(".running_var", "._variance")
            value = np.asarray(value)
            if key == "fc.weight" and value.ndim == 2:
                value = value.T
            out[key] = value
        return out


def _variant(depth):
    return register_variant(
        manager.BACKBONES, PalQuantResNet, "PalQuantResNet{}".format(depth),
        dict(depth=depth, num_classes=None),
        "PalQuant ResNet-{} backbone (registered as ``RTSeg_PalQuantResNet{}``): the four stage "
        "outputs; keyword arguments override (groups, weight_levels, act_levels, base_channels)."
        .format(depth, depth))


PalQuantResNet18 = _variant(18)
PalQuantResNet34 = _variant(34)


class FirstBatchQuantizerInit:
    """Mixin for segmentation models holding QConvs: the quantizers start uninitialised (every
    QConv ``init`` buffer 1); the first forward in training mode runs
    :func:`~paddle_rtseg.layers.palquant_conv.init_quantizers` on that batch (the authors'
    one-batch ``init_quant_model``), which sets them to 0, so PaddleSeg's trainer needs nothing
    more; a loaded checkpoint (``init`` 0) is not re-initialised. With data parallel training every
    rank initialises on its own first batch (the authors initialise on rank 0 before wrapping the
    model)."""

    def _track_quantizer_init(self, network):
        self._qconvs = [m for m in network.sublayers(include_self=True) if isinstance(m, QConv)]
        for m in self._qconvs:
            m.init.set_value(paddle.ones([1], "int64"))
        self._init_checked = not self._qconvs

    @paddle.jit.not_to_static
    def _init_pending(self):
        """True until the quantizers are initialised (read from the ``init`` buffers once)."""
        if self._init_checked:
            return False
        pending = any(int(m.init.numpy()[0]) == 1 for m in self._qconvs)
        self._init_checked = not pending
        return pending

    def _init_quantizers_on_first_batch(self, network, *inputs):
        """In training mode and while pending: initialise ``network``'s QConvs on ``inputs`` (it
        may be ``self``: the flag is set first, so the pass through ``forward`` does not recurse)."""
        if self.training and self._init_pending():
            self._init_checked = True
            init_quantizers(network, *inputs)


@register(manager.MODELS)
class PalQuantSeg(FirstBatchQuantizerInit, nn.Layer):
    """PalQuant ResNet + a light full-precision head (registered as ``RTSeg_PalQuantSeg``).

    Head (our choice; PalQuant is a classification paper and keeps its stem and classifier in
    full precision): a 1x1 Conv-BN-ReLU per stage to ``head_channels``, all upsampled to 1/4 and
    summed, a 3x3 Conv-BN-ReLU, dropout, a 1x1 classifier, logits upsampled to the input.

    The quantizers initialise on the first training batch (:class:`FirstBatchQuantizerInit`).

    Args:
        num_classes: number of classes.
        backbone: a PalQuant ResNet backbone (``RTSeg_PalQuantResNet18/34``).
        head_channels: width of the head.
        dropout: before the classifier.
        align_corners: of every upsampling.
        pretrained: checkpoint of the whole model.
    """

    def __init__(self, num_classes, backbone, head_channels=64, dropout=0.1, align_corners=False,
                 pretrained=None):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.laterals = nn.LayerList([layers.ConvBNReLU(c, head_channels, 1, bias_attr=False)
                                      for c in backbone.feat_channels])
        self.fuse = layers.ConvBNReLU(head_channels, head_channels, 3, padding=1, bias_attr=False)
        self.dropout = nn.Dropout2D(dropout)
        self.cls = nn.Conv2D(head_channels, num_classes, 1)
        self._track_quantizer_init(backbone)
        self.pretrained = pretrained
        if pretrained is not None:
            from ..weights.checkpoints import load_pretrained
            load_pretrained(self, pretrained)

    def _resize(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x):
        self._init_quantizers_on_first_batch(self.backbone, x)
        feats = self.backbone(x)
        size = spatial_size(feats[0])
        out = self.laterals[0](feats[0])
        for lateral, feat in zip(self.laterals[1:], feats[1:]):
            out = out + self._resize(lateral(feat), size)
        logit = self.cls(self.dropout(self.fuse(out)))
        return [self._resize(logit, spatial_size(x))]


class _ScaledLR(paddle.optimizer.lr.LRScheduler):
    """``scale`` x another schedule's current learning rate (stepped by whoever steps that one)."""

    def __init__(self, base, scale):
        self.base, self.scale = base, scale
        super().__init__(learning_rate=self._value())

    def _value(self):
        base = self.base() if isinstance(self.base, paddle.optimizer.lr.LRScheduler) else self.base
        return float(base) * self.scale

    def get_lr(self):
        return self._value()

    def __call__(self):
        return self._value()


class _WithQuantizerAdam:
    """The authors' two optimizers as one: this optimizer for the network's weights (stepped and
    scheduled by PaddleSeg's trainer) and Adam for every QConv's ``lW uW lA uA output_scale``
    (inside it, at ``quant_lr / lr`` times the same schedule: with the authors' cosine-to-zero
    schedules both, equal to their separate schedulers). ``state_dict`` holds both (the
    quantizer optimizer's keys under ``quant/``)."""

    def _add_quantizer_adam(self, learning_rate, quantizer_parameters, quant_lr_ratio, beta1,
                            beta2, epsilon):
        self.quant_optimizer = paddle.optimizer.Adam(
            learning_rate=_ScaledLR(learning_rate, quant_lr_ratio), beta1=beta1, beta2=beta2,
            epsilon=epsilon, parameters=quantizer_parameters)

    def step(self):
        super().step()
        self.quant_optimizer.step()

    def clear_grad(self, set_to_zero=True):
        super().clear_grad(set_to_zero)
        self.quant_optimizer.clear_grad(set_to_zero)

    def state_dict(self):
        state = super().state_dict()
        state.update({"quant/" + k: v for k, v in self.quant_optimizer.state_dict().items()})
        return state

    def set_state_dict(self, state_dict):
        self.quant_optimizer.set_state_dict(
            {k[len("quant/"):]: v for k, v in state_dict.items() if k.startswith("quant/")})
        super().set_state_dict({k: v for k, v in state_dict.items()
                                if not k.startswith("quant/")})


class PalQuantMomentum(_WithQuantizerAdam, paddle.optimizer.Momentum):
    """Momentum SGD on the weights (the authors' recipe) + Adam on the quantizers."""

    def __init__(self, learning_rate, parameters, quantizer_parameters, quant_lr_ratio,
                 momentum=0.9, weight_decay=None, use_nesterov=False, grad_clip=None,
                 beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(learning_rate=learning_rate, momentum=momentum, parameters=parameters,
                         use_nesterov=use_nesterov, weight_decay=weight_decay, grad_clip=grad_clip)
        self._add_quantizer_adam(learning_rate, quantizer_parameters, quant_lr_ratio, beta1,
                                 beta2, epsilon)


class PalQuantAdamW(_WithQuantizerAdam, paddle.optimizer.AdamW):
    """AdamW on the weights (the recipe of a family trained with AdamW, e.g. RTFormer) + Adam on
    the quantizers (no weight decay on the quantization intervals, as in the authors' code)."""

    def __init__(self, learning_rate, parameters, quantizer_parameters, quant_lr_ratio,
                 weight_decay=0.01, grad_clip=None, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                         parameters=parameters, weight_decay=weight_decay, grad_clip=grad_clip)
        self._add_quantizer_adam(learning_rate, quantizer_parameters, quant_lr_ratio, beta1,
                                 beta2, epsilon)


@register(manager.OPTIMIZERS)
class PalQuantOptimizer:
    """PaddleSeg optimizer component (``type: RTSeg_PalQuantOptimizer``) for the authors' recipe:
    SGD with momentum (``momentum``, ``weight_decay``) on the weights at the config's
    ``lr_scheduler``, Adam on the quantizer parameters at ``quant_learning_rate`` following the
    same schedule shape, with ``beta1 beta2 epsilon`` (the authors: lr 0.1 / 1e-4, momentum 0.9,
    wd 1e-4, no decay on the quantizers, Adam's default betas, both cosine).
    ``weight_optimizer: AdamW`` trains the weights with AdamW instead (``beta1 beta2 epsilon
    weight_decay``; for families whose own recipe is AdamW). Mixed precision is not supported
    (the loss scaler unscales one optimizer's gradients only)."""

    WEIGHT_OPTIMIZERS = ("Momentum", "AdamW")

    def __init__(self, quant_learning_rate=1e-4, momentum=0.9, weight_decay=1e-4,
                 use_nesterov=False, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_optimizer="Momentum"):
        if weight_optimizer not in self.WEIGHT_OPTIMIZERS:
            raise ValueError("RTSeg_PalQuantOptimizer weight_optimizer must be one of {}, got "
                             "{!r}".format(list(self.WEIGHT_OPTIMIZERS), weight_optimizer))
        self.quant_learning_rate, self.momentum = quant_learning_rate, momentum
        self.weight_decay, self.use_nesterov = weight_decay, use_nesterov
        self.weight_optimizer = weight_optimizer
        self.adam = dict(beta1=beta1, beta2=beta2, epsilon=epsilon)

    def __call__(self, model, lr):
        from ..layers.palquant_conv import split_quantizer_parameters
        rest, quant = split_quantizer_parameters(model)
        if not quant:
            raise ValueError("RTSeg_PalQuantOptimizer needs a model with PalQuant QConv layers; "
                             "{} has none (use another optimizer type)".format(type(model).__name__))
        base = lr
        if isinstance(base, paddle.optimizer.lr.LinearWarmup):  # PaddleSeg's warmup_iters
            base = base.learning_rate
        if isinstance(base, paddle.optimizer.lr.LRScheduler):
            base = base.base_lr
        if not float(base) > 0:
            raise ValueError("RTSeg_PalQuantOptimizer needs a positive base learning rate, got "
                             "{}".format(base))
        weights = [p for p in rest if not p.stop_gradient]
        ratio = float(self.quant_learning_rate) / float(base)
        if self.weight_optimizer == "AdamW":
            return PalQuantAdamW(lr, weights, quant, ratio, weight_decay=self.weight_decay,
                                 **self.adam)
        return PalQuantMomentum(lr, weights, quant, ratio, momentum=self.momentum,
                                weight_decay=self.weight_decay, use_nesterov=self.use_nesterov,
                                **self.adam)
