"""Datasets: the generated synthetic set and checked image reading for any PaddleSeg dataset."""
from .checked_io import DataError, check_dataset, read_image
from .synthetic import Synthetic, generate_synthetic
