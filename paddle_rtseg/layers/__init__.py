"""Building blocks defined by the papers, usable on their own (no model code imports back here)."""
from .adaptive_pool import AdaptiveAvgPool2D, AdaptiveMaxPool2D
from .channel_shuffle import ChannelShuffle, channel_shuffle
from .conv_ffn import ConvFFN
from .conv_merging import ConvMerging
from .conv_stem import ConvStem
from .cross_resolution import CrossResolutionAttention, cross_kv_projection
from .cyclic_shuffle import CyclicShuffle, cyclic_permute
from .dappm import DAPPM
from .gfa import GPUFriendlyAttention, grouped_double_normalization
from .mixing_attention import MixingAttention
from .palquant_conv import QConv, init_quantizers, split_quantizer_parameters
from .pyramid_pooling import PyramidPooling
from .residual import BasicBlock, make_stage
from .sea_attention import DetailEnhancement, SeaAttention, SqueezeAxialAttention
from .seg_head import SegHead
from .token_merging import (PRESETS, BipartiteSoftMatching, TokenMergingConfig, TokenMergingStrategy,
                            resolve_token_merging)
