"""The PyTorch half of ``python -m paddle_rtseg.bench_train``: the authors' own code, timed in its own
process and venv (this file imports no Paddle and nothing from paddle_rtseg).

    <torch venv>/bin/python paddle_rtseg/benchmarks/torch_side.py --family seaformer \
        --authors_dir DIR --work WORKDIR [--variant tiny] [--num_classes 11] [--threads 2]

``DIR`` holds the authors' code, which is not part of this repository:
``DIR/SeaFormer/seaformer-seg`` (github.com/fudan-zvg/SeaFormer, 9718d05),
``DIR/SegformerPlusPlus/model`` (github.com/KieDani/SegformerPlusPlus, 7fb8797; needs ``mmengine``,
``mmcv-lite`` 2.x and ``tomesd`` in the venv) and ``DIR/PalQuant/{quant_conv,quant_resnet,
shuffle_utils}.py`` (github.com/huqinghao/PalQuant, be4dec3). SeaFormer's mmcv 1.x / mmseg 0.x
imports are served by small stand-ins below (``ConvModule`` and ``build_norm_layer`` come from
mmcv-lite 2.x, whose layer names are those of 1.x); the authors' files are loaded unmodified.

Protocol (one JSON object per line): the child builds the model (``torch.manual_seed(0)``), writes
its state dict to ``WORK/torch_state.npz`` (the authors' key names; the parent converts them with
our ``convert_torch_state_dict``) and prints ``{"ready": ...}``. Then it reads commands on stdin:

* ``{"cmd": "logits"}``: eval-mode logits of ``WORK/batch.npz`` ``x_infer`` into
  ``WORK/torch_logits.npy`` (the parent compares them with ours: same weights, same input);
* ``{"cmd": "infer"}``: one eval forward under ``no_grad``, timed here: ``{"ms": ...}``;
* ``{"cmd": "train"}``: one training step on ``x``/``y`` (forward, cross-entropy, backward,
  optimizer step, zero grad), timed here: ``{"ms": ...}``;
* ``{"cmd": "quit"}``.
"""
import argparse
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = 255


# ---------------------------------------------------------------- SeaFormer (mmseg 0.x code)

def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that relative imports below it resolve
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


class _BaseDecodeHead(nn.Module):
    """What mmseg 0.x's ``BaseDecodeHead`` gives ``LightHead`` at training and inference: the
    attributes, ``conv_seg``, dropout, ``_transform_inputs`` ('multiple_select') and ``cls_seg``
    (losses are computed by the benchmark)."""

    def __init__(self, in_channels, channels, *, num_classes, dropout_ratio=0.1, conv_cfg=None,
                 norm_cfg=None, act_cfg=dict(type="ReLU"), in_index=-1, input_transform=None,
                 align_corners=False, **unused):
        super().__init__()
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.conv_cfg, self.norm_cfg, self.act_cfg = conv_cfg, norm_cfg, act_cfg
        self.in_index, self.input_transform = in_index, input_transform
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def _transform_inputs(self, inputs):
        return [inputs[i] for i in self.in_index]

    def cls_seg(self, feat):
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)


def _load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _config(path):
    scope = {}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), scope)  # the authors' config: plain dicts
    return scope["model"]


class _Segmentor(nn.Module):
    """``backbone`` + ``decode_head``, logits resized to the input (mmseg's whole-mode inference
    and the size the loss sees)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.decode_head = backbone, head

    def forward(self, x):
        out = self.decode_head(self.backbone(x))
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)


def build_seaformer(root, variant, num_classes):
    import mmcv.cnn
    src = os.path.join(root, "SeaFormer", "seaformer-seg")
    _module("mmcv.runner", _load_checkpoint=None)
    _module("mmseg")
    _module("mmseg.utils", get_root_logger=None)
    _module("mmseg.ops", resize=lambda input, size=None, scale_factor=None, mode="nearest",
            align_corners=None, warning=True: F.interpolate(input, size, scale_factor, mode,
                                                            align_corners))
    _module("mmseg.models")
    _module("mmseg.models.builder", BACKBONES=_Registry(), HEADS=_Registry())
    _module("mmseg.models.utils")
    _module("mmseg.models.backbones")
    _module("mmseg.models.decode_heads")
    _module("mmseg.models.decode_heads.decode_head", BaseDecodeHead=_BaseDecodeHead)
    assert mmcv.cnn.ConvModule is not None
    models = os.path.join(src, "mmseg", "models")
    backbones = _load_file("mmseg.models.backbones.seaformer",
                           os.path.join(models, "backbones", "seaformer.py"))
    heads = _load_file("mmseg.models.decode_heads.light_head",
                       os.path.join(models, "decode_heads", "light_head.py"))
    cfg = _config(os.path.join(src, "local_configs", "seaformer", "seaformer_{}.py".format(variant)))
    norm = dict(type="BN", requires_grad=True)  # SyncBN in one process
    bb = {k: v for k, v in cfg["backbone"].items() if k not in ("type", "init_cfg")}
    bb.update(norm_cfg=norm, drop_path_rate=0.0)  # drop path off as in our CamVid config
    hd = {k: v for k, v in cfg["decode_head"].items() if k not in ("type", "loss_decode")}
    hd.update(norm_cfg=norm, num_classes=num_classes)
    return _Segmentor(backbones.SeaFormer(**bb), heads.LightHead(**hd))


# ---------------------------------------------------------------- SegFormer++ (mmseg 1.x code)

def build_segformer(root, variant, num_classes):
    sys.path.insert(0, os.path.join(root, "SegformerPlusPlus", "model"))
    from segformer_plusplus.build_model import create_model
    model = create_model(variant.lower(), tome_strategy=None, out_channels=num_classes)
    return _Segmentor(model.backbone, model.decode_head)


# ---------------------------------------------------------------- PalQuant (classification ResNet)

def build_palquant(root, variant, num_classes, base=16):
    """The authors' ``resnet18_quant`` (G=2, W2A2) with the per-group base width 64 set to
    ``base`` (16, as our CamVid config), done on the source text at load time."""
    src = os.path.join(root, "PalQuant")
    sys.path.insert(0, src)
    import quant_conv  # noqa: F401
    import shuffle_utils
    with open(os.path.join(src, "quant_resnet.py")) as f:
        code = f.read()
    for old in ("64*self.groups", "128*self.groups", "256*self.groups", "512*self.groups",
                "512 * block.expansion"):
        if old not in code:
            raise SystemExit("quant_resnet.py is not the expected version: no {!r}".format(old))
        code = code.replace(old, "{}*".format(int(old.split("*")[0]) * base // 64)
                            + old.split("*", 1)[1])
    module = types.ModuleType("quant_resnet")
    module.__file__ = os.path.join(src, "quant_resnet.py")
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    # Their CyclicShuffle adds in place to a ReLU output that autograd saved (PyTorch 2.x refuses
    # backward through it): the same sum, out of place.
    shuffle_utils.CyclicShuffle.forward = lambda self, x: self.conv1(
        shuffle_utils.cyclic_permute(x, self.groups)) + x
    args = types.SimpleNamespace(QWeightFlag=True, QActFlag=True, weight_levels=4, act_levels=4,
                                 bkwd_scaling_factorW=0.0, bkwd_scaling_factorA=0.0)
    groups = int(variant.lstrip("g") or 2)
    model = module.resnet18_quant(args, groups=groups, num_classes=num_classes)
    return model, quant_conv.QConv


def palquant_init(model, qconv, x):
    """The authors' ``init_quant_model`` on one batch."""
    for m in model.modules():
        if isinstance(m, qconv):
            m.init.data.fill_(1)
    model.train()
    with torch.no_grad():
        model(x)
    for m in model.modules():
        if isinstance(m, qconv):
            m.init.data.fill_(0)


def palquant_optimizer(model, qconv):
    """The authors' two optimizers: SGD (momentum 0.9, wd 1e-4) on the weights, Adam on the
    quantizer parameters."""
    quant = [p for m in model.modules() if isinstance(m, qconv)
             for p in (m.lW, m.uW, m.lA, m.uA, m.output_scale)]
    ids = {id(p) for p in quant}
    rest = [p for p in model.parameters() if id(p) not in ids]
    opt_m = torch.optim.SGD(rest, lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt_q = torch.optim.Adam(quant, lr=1e-4)
    return [opt_m, opt_q]


# ---------------------------------------------------------------- driver

def main(argv=None):
    p = argparse.ArgumentParser(description="the authors' PyTorch side of bench_train")
    p.add_argument("--family", required=True, choices=["seaformer", "segformer", "palquant"])
    p.add_argument("--variant", default=None)
    p.add_argument("--authors_dir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--num_classes", type=int, default=11)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    reply_to, sys.stdout = sys.stdout, sys.stderr  # the authors' prints must not reach the pipe
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = np.load(os.path.join(args.work, "batch.npz"))
    x, y = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"]).long()
    x_infer = torch.from_numpy(batch["x_infer"])
    if args.family == "palquant":
        model, qconv = build_palquant(args.authors_dir, args.variant or "g2", args.num_classes)
        palquant_init(model, qconv, x)
        optimizers = palquant_optimizer(model, qconv)
    else:
        build = build_seaformer if args.family == "seaformer" else build_segformer
        model = build(args.authors_dir, args.variant or ("tiny" if args.family == "seaformer"
                                                         else "b0"), args.num_classes)
        optimizers = [torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999),
                                        weight_decay=0.01)]
    np.savez(os.path.join(args.work, "torch_state.npz"),
             **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": args.threads}),
          file=reply_to, flush=True)

    def infer():
        model.eval()
        with torch.no_grad():
            return model(x_infer)

    def train():
        model.train()
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=False)
        return float(loss.detach())

    for line in sys.stdin:
        cmd = json.loads(line)["cmd"]
        if cmd == "quit":
            break
        if cmd == "logits":
            np.save(os.path.join(args.work, "torch_logits.npy"), infer().numpy())
            reply = {"ok": True}
        else:
            start = time.perf_counter()
            out = train() if cmd == "train" else infer()
            reply = {"ms": 1000.0 * (time.perf_counter() - start)}
            if cmd == "train":
                reply["loss"] = out
        print(json.dumps(reply), file=reply_to, flush=True)


if __name__ == "__main__":
    main()
