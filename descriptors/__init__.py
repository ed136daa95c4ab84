"""image -> vector(s). Built-in models (sscd, sscd_distilled, sscd_torchscript, timm:<arch>) load lazily."""

from copyscope.descriptors.base import Descriptor
from copyscope.descriptors.preprocess import PreprocessCfg, resize_image
from copyscope.descriptors.registry import (create_descriptor, descriptor_backend, list_descriptors,
                                            register_descriptor)

__all__ = ["Descriptor", "PreprocessCfg", "create_descriptor", "descriptor_backend", "list_descriptors",
           "register_descriptor", "resize_image"]
