"""Make tests/fixtures/palquant_*: outputs of the PalQuant authors' own code on tiny models.

The authors' code (github.com/huqinghao/PalQuant, head be4dec3: quant_conv.py, shuffle_utils.py,
quant_resnet.py) has no licence, so it is not in this repository: pass the folder holding a copy of
it. Run with any Python that has PyTorch and NumPy (no Paddle needed), e.g.::

    python3.10 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch numpy
    git clone https://github.com/huqinghao/PalQuant /tmp/PalQuant   # or `git archive be4dec3`
    /tmp/torchref/bin/python scripts/make_palquant_fixtures.py /tmp/PalQuant tests/fixtures

What it runs and stores (tests/test_palquant.py checks our Paddle code against it):

* ``palquant_resnet18_g{2,4}.npz`` -- the authors' ``QResNet`` (``resnet18_quant``, W2A2: 4 weight
  and 4 activation levels) at G = 2 and G = 4, with the per-group base width 64 of
  ``quant_resnet.py`` replaced by 2 (the only change to their code, done on the source text at load
  time and checked to hit exactly the six width literals) and 10 classes. Entries: ``state/``
  the initial state dict (float values rounded to float16 precision before anything runs, so they
  are stored exactly as float16); ``x_init`` one "training batch" and ``y_init`` the model's output
  during the authors' ``init_quant_model`` step (every QConv's ``init`` set to 1, one forward in
  train mode, ``init`` back to 0); (``state/``, ``after/``, ``bn_count/``: many arrays packed
  in three, see ``pack``); ``after/`` every quantizer parameter and BN running
  statistic after that step; ``bn_count/`` the number of values each BN averaged (for the
  running-variance convention); ``x_eval``/``y_eval`` a batch and the output in eval mode after it.
* ``palquant_qconv.npz`` -- one grouped 3x3 stride-2 ``QConv`` (W2A2, G=2): initialisation on a
  batch, the output, and the gradients of ``sum(output * r)`` for the input, the weight and each
  quantizer parameter (the straight-through backward).
* ``palquant_checkpoint.pth.tar`` / ``palquant_checkpoint.npz`` -- the authors' ``main.py``
  ``save_checkpoint`` layout for a G=2, width-1 model: ``{'epoch', 'arch', 'state_dict'`` (keys under
  DDP's ``module.``), ``'best_acc1'`` (a tensor), ``'optimizer_m'`` (SGD), ``'optimizer_q'``
  (Adam), ``'scheduler_m'``, ``'scheduler_q'`` (cosine)}``, written by ``torch.save`` after the init
  step and one training step; the npz holds an input and the eval output of that model.
"""
import argparse
import math
import os
import sys
import types

import numpy as np

BASE = 2  # per-group base width of the parity models (the authors' code has 64)


def load_authors(src, base):
    """Import the authors' modules from ``src``; ``quant_resnet`` with its width literals scaled
    to ``base`` per group."""
    sys.path.insert(0, src)
    import quant_conv  # noqa: F401
    import shuffle_utils  # noqa: F401
    with open(os.path.join(src, "quant_resnet.py")) as f:
        code = f.read()
    for old, count in (("64*self.groups", 2), ("128*self.groups", 1), ("256*self.groups", 1),
                       ("512*self.groups", 1), ("512 * block.expansion", 1)):
        if code.count(old) != count:
            raise SystemExit("quant_resnet.py is not the expected version: {!r} occurs {} times"
                             .format(old, code.count(old)))
        new = "{}*".format(int(old.split("*")[0]) * base // 64) + old.split("*", 1)[1]
        code = code.replace(old, new)
    module = types.ModuleType("quant_resnet")
    module.__file__ = os.path.join(src, "quant_resnet.py")
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    return module


def pack(prefix, arrays, dtype):
    """Many small arrays as three (a zip entry each costs ~200 bytes): ``<prefix>keys`` (names,
    newline-joined), ``<prefix>shapes`` (ndim then dims, per array), ``<prefix>values`` (all of
    them flat, in ``dtype``). tests/test_palquant.py ``unpack`` reverses it."""
    keys = list(arrays)
    shapes = []
    for k in keys:
        shapes += [np.ndim(arrays[k])] + list(np.shape(arrays[k]))
    values = np.concatenate([np.asarray(arrays[k], dtype).reshape(-1) for k in keys])
    return {prefix + "keys": np.array("\n".join(keys)), prefix + "shapes": np.array(shapes, np.int64),
            prefix + "values": values}


def make_args(levels=4):
    return types.SimpleNamespace(QWeightFlag=True, QActFlag=True, weight_levels=levels,
                                 act_levels=levels, bkwd_scaling_factorW=0.0,
                                 bkwd_scaling_factorA=0.0)


def round_to_half(torch, module):
    """Round every float parameter/buffer to float16 precision (stored exactly as float16)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())


def init_step(torch, model, images, qconv_cls):
    """The authors' ``init_quant_model`` on one batch (their function reads ImageNet itself)."""
    for m in model.modules():
        if isinstance(m, qconv_cls):
            m.init.data.fill_(1)
    model.train()
    out = model.forward(images)
    for m in model.modules():
        if isinstance(m, qconv_cls):
            m.init.data.fill_(0)
    return out


def resnet_fixture(torch, qr, qc, groups, seed):
    torch.manual_seed(seed)
    model = qr.resnet18_quant(make_args(), groups=groups, num_classes=10)
    round_to_half(torch, model)
    data = pack("state/", {k: v.numpy() for k, v in model.state_dict().items()}, np.float16)
    counts = {}

    def hook(name):
        def count(module, inputs, output):
            counts[name] = inputs[0].numel() // inputs[0].shape[1]
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(4, 3, 32, 32).half().float()
    with torch.no_grad():
        y = init_step(torch, model, x, qc.QConv)
    for h in handles:
        h.remove()
    data.update(x_init=x.numpy().astype(np.float16), y_init=y.numpy())
    data.update(pack("after/", {k: v.numpy() for k, v in model.state_dict().items()
                                if k.rsplit(".", 1)[1] in ("uW", "lW", "uA", "lA", "output_scale",
                                                           "running_mean", "running_var")},
                     np.float32))
    data.update(pack("bn_count/", counts, np.int64))
    model.eval()
    x = torch.randn(2, 3, 48, 40).half().float()
    with torch.no_grad():
        data.update(x_eval=x.numpy().astype(np.float16), y_eval=model(x).numpy())
    return data


def qconv_fixture(torch, qc):
    torch.manual_seed(7)
    conv = qc.QConv(8, 12, 3, make_args(), stride=2, padding=1, groups=2, bias=False)
    torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    round_to_half(torch, conv)
    data = {"weight": conv.weight.detach().numpy().astype(np.float16)}
    x = torch.relu(torch.randn(3, 8, 9, 9)).half().float()
    data["x_init"] = x.numpy().astype(np.float16)
    conv.init.data.fill_(1)
    with torch.no_grad():
        data["y_init"] = conv(x).numpy()
    conv.init.data.fill_(0)
    for name in ("uW", "lW", "uA", "lA", "output_scale"):
        data["after/" + name] = getattr(conv, name).detach().numpy()
    x = (torch.randn(3, 8, 9, 9) * 0.7 + 0.2).half().float().requires_grad_(True)
    r = torch.randn(3, 12, 5, 5).half().float()
    y = conv(x)
    (y * r).sum().backward()
    data.update(x=x.detach().numpy().astype(np.float16), r=r.numpy().astype(np.float16),
                y=y.detach().numpy(), **{"grad/x": x.grad.numpy()})
    for name in ("weight", "uW", "lW", "uA", "lA", "output_scale"):
        data["grad/" + name] = getattr(conv, name).grad.numpy()
    return data


def checkpoint_fixture(torch, src, qc, out_dir):
    qr = load_authors(src, 1)
    torch.manual_seed(3)
    model = qr.resnet18_quant(make_args(), groups=2, num_classes=5)
    init_step(torch, model, torch.randn(4, 3, 32, 32), qc.QConv)
    quant = [p for m in model.modules() if isinstance(m, qc.QConv)
             for p in (m.lW, m.uW, m.lA, m.uA, m.output_scale)]
    ids = {id(p) for p in quant}
    rest = [p for p in model.parameters() if id(p) not in ids]
    opt_m = torch.optim.SGD(rest, lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt_q = torch.optim.Adam(quant, lr=1e-4)
    sch_m = torch.optim.lr_scheduler.CosineAnnealingLR(opt_m, T_max=90)
    sch_q = torch.optim.lr_scheduler.CosineAnnealingLR(opt_q, T_max=90)
    model.train()
    # The authors' CyclicShuffle adds in place to a ReLU output autograd saved (PyTorch 2.x refuses
    # backward through it); the same sum, out of place, for this one training step.
    model_shuffle = sys.modules["shuffle_utils"]
    model_shuffle.CyclicShuffle.forward = lambda self, x: self.conv1(
        model_shuffle.cyclic_permute(x, self.groups)) + x
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)),
                                             torch.tensor([0, 1, 2, 3]))
    opt_m.zero_grad()
    opt_q.zero_grad()
    loss.backward()
    opt_m.step()
    opt_q.step()
    sch_m.step()
    sch_q.step()
    state = {"module." + k: v for k, v in model.state_dict().items()}  # as DDP's state_dict()
    torch.save({"epoch": 1, "arch": "resnet18_quant", "state_dict": state,
                "best_acc1": torch.tensor(12.5), "optimizer_m": opt_m.state_dict(),
                "optimizer_q": opt_q.state_dict(), "scheduler_m": sch_m.state_dict(),
                "scheduler_q": sch_q.state_dict()},
               os.path.join(out_dir, "palquant_checkpoint.pth.tar"))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.savez_compressed(os.path.join(out_dir, "palquant_checkpoint.npz"), x=x.numpy(),
                            y=model(x).numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("authors_code", help="folder with the authors' quant_resnet.py etc.")
    parser.add_argument("out_dir", help="where to write the fixtures (tests/fixtures)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    src = os.path.abspath(args.authors_code)
    qr = load_authors(src, BASE)
    import quant_conv as qc
    for groups, seed in ((2, 0), (4, 1)):
        data = resnet_fixture(torch, qr, qc, groups, seed)
        np.savez_compressed(os.path.join(args.out_dir, "palquant_resnet18_g{}.npz".format(groups)),
                            **data)
    np.savez_compressed(os.path.join(args.out_dir, "palquant_qconv.npz"), **qconv_fixture(torch, qc))
    checkpoint_fixture(torch, src, qc, args.out_dir)
    print("torch", torch.__version__, "pi", math.pi)


if __name__ == "__main__":
    main()
