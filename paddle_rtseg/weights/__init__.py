"""Weights I/O: reading checkpoints (PaddleSeg ``.pdparams``, the authors' PyTorch ``.pth``) through a
safe unpickler that never runs code, mapping them onto our models, and writing them atomically.

- :mod:`.checkpoints`: ``load_checkpoint`` / ``load_pretrained``, key reports, resume checks;
- :mod:`.safe_pickle`: the unpickler (an allow-list of plain containers and tensors, bounded sizes);
- :mod:`.torch_reader`: PyTorch zip / legacy files without torch;
- :mod:`.safe_paddleseg`: PaddleSeg's own readers routed through the unpickler;
- :mod:`.atomic`: checkpoint writes that never leave half a file.
"""
