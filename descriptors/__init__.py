"""image -> vector(s). Built-in models (sscd, sscd_distilled, sscd_torchscript, timm:<arch>) load lazily."""

from descriptors.base import Descriptor
from descriptors.preprocess import PreprocessCfg, resize_image
from descriptors.registry import create_descriptor, list_descriptors, register_descriptor

__all__ = ["Descriptor", "PreprocessCfg", "create_descriptor", "list_descriptors", "register_descriptor",
           "resize_image"]
