"""image -> vector(s). Importing the package registers every built-in descriptor."""

from descriptors import onnx_sscd, sscd_torchscript, timm_gem  # noqa: F401  (registration)
from descriptors.base import Descriptor
from descriptors.preprocess import PreprocessCfg, resize_image
from descriptors.registry import create_descriptor, list_descriptors, register_descriptor

__all__ = ["Descriptor", "PreprocessCfg", "create_descriptor", "list_descriptors", "register_descriptor",
           "resize_image"]
