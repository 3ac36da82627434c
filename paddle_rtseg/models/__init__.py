"""Models composed from :mod:`paddle_rtseg.layers`; importing registers them with PaddleSeg."""
from .mixformer import MixFormer
from .palquant import PalQuantResNet, PalQuantSeg
from .palquant_rtformer import PalQuantRTFormer
from .rtformer import RTFormer, RTFormerBlock
from .seaformer import SeaFormer, SeaFormerSeg
from .segformer_pp import MixVisionTransformer, SegFormerPP
from .upernet import UPerNet
