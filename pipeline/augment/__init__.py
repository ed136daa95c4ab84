"""Copy edits like those of DISC2021, sampled apart from their application so they replay exactly.

Single images (OpenCV / PIL): `sample_chain` draws a list of (edit, params) pairs and
`apply_chain` applies it; params are plain JSON and record everything, including the key of any
other photo used (through `EditContext`). Batches of tensors (kornia, for training): `batch`.
"""

from copyscope.pipeline.augment import composites, geometric, overlays, photometric  # noqa: F401  (registers edits)
from copyscope.pipeline.augment.chain import Chain, apply_chain, chain_shape, resolve_edits, sample_chain, sample_edit
from copyscope.pipeline.augment.registry import (
    EDITS, GROUPS, MAX_SIDE, Edit, EditContext, apply_edit, get_edit, list_edits, output_shape, register,
)

__all__ = [
    "Chain", "EDITS", "GROUPS", "MAX_SIDE", "Edit", "EditContext", "apply_chain", "apply_edit", "chain_shape",
    "get_edit", "list_edits", "output_shape", "register", "resolve_edits", "sample_chain", "sample_edit",
]
