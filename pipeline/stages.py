"""The prepare and embed stages, as a plain function and a callable class (run in process or in Ray actors).

Batches are dicts of numpy arrays. `prepare_batch` turns each image into one row per *view*: view 0
is the whole image, views 1..R are sub-regions proposed for region search (queries only). A row that
fails keeps flowing with `error` set, so every failure reaches the driver as a record with a reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import numpy as np

from copyscope.descriptors import Descriptor, PreprocessCfg, resize_image
from copyscope.descriptors.regions import propose_regions
from copyscope.matching.local_features import LocalFeatures, LocalSpec, extract_local_features
from copyscope.pipeline.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image

_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)
_NO_BOX = np.zeros(4, np.int32)


@dataclass(frozen=True)
class PrepareOptions:
    """What the prepare stage makes of each image.

    preprocess: the model's PreprocessCfg as a dict. regions: most sub-regions per image (0: none).
    region_size: the short side region views are resized to (None: the model's size).
    local: local features to extract from the whole image (None: none). pixel_hash: also hash the
    decoded pixels (exact duplicate detection; JPEGs are then decoded at full size). whole: emit the
    whole-image view (False: only the regions, for a second pass over images whose whole view is done).
    full_size: decode JPEGs at full size even without regions (a first pass whose results must equal
    those of a pass with regions).
    """

    preprocess: dict
    max_pixels: int = DEFAULT_MAX_PIXELS
    regions: int = 0
    region_size: int | None = None
    local: LocalSpec | None = None
    pixel_hash: bool = False
    whole: bool = True
    full_size: bool = False

    @property
    def local_method(self) -> str | None:
        return self.local.method if self.local else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PrepareOptions":
        return cls(**{**d, "local": LocalSpec(**d["local"]) if d.get("local") else None})


def prepare_batch(batch: dict, options: dict) -> dict:
    """{"id", "path", ...} -> one row per view: adds "view" (int32), "box" (4,) int32 (x0, y0, x1, y1 of
    the view in the decoded image), "image" (object: (h, w, 3) uint8 resized for the model), "error"
    (str), and with local features "lf_keypoints" (object: (N, 2) float32), "lf_descriptors" (object:
    (N, D) uint8), "lf_size" (2,) int32 (h, w) on view 0 rows (empty on region rows), and with
    pixel_hash "pixel_hash" (str, `pixel_digest` of the decoded image; "" for failures).
    A row may carry "boxes" ((R, 4) float: x0, y0, x1, y1 as fractions of the image's width and height, such
    as a region that verification found): its region views are those boxes instead of the proposals.
    """
    opts = PrepareOptions.from_dict(options)
    cfg = PreprocessCfg.from_dict(opts.preprocess)
    region_cfg = replace(cfg, size=opts.region_size) if opts.region_size else cfg
    passthrough = [k for k in batch if k not in ("image", "error", "boxes")]
    out: dict[str, list] = {k: [] for k in passthrough + ["view", "box", "image", "error"]}
    if opts.local_method:
        out.update(lf_keypoints=[], lf_descriptors=[], lf_size=[])
    if opts.pixel_hash:
        out["pixel_hash"] = []
    full_size = opts.regions or opts.pixel_hash or opts.full_size or "boxes" in batch
    first = 0 if opts.whole else 1
    for i, path in enumerate(batch["path"]):
        try:
            # Regions are cut from the image as decoded: keep JPEGs at full size when regions are wanted.
            image = decode_image(path, max_pixels=opts.max_pixels, min_side=None if full_size else cfg.size)
            digest = pixel_digest(image) if opts.pixel_hash else ""
            if "boxes" in batch:
                boxes = _pixel_boxes(batch["boxes"][i], image.shape[:2])
            elif opts.regions:
                boxes = propose_regions(image, max_regions=opts.regions)
            else:
                boxes = np.zeros((0, 4), np.int32)
            views = [(np.array([0, 0, image.shape[1], image.shape[0]], np.int32), resize_image(cfg, image))
                     ] if opts.whole else []
            views += [(box, resize_image(region_cfg, np.ascontiguousarray(image[box[1]:box[3], box[0]:box[2]])))
                      for box in boxes]
            local = extract_local_features(image, opts.local.method, max_keypoints=opts.local.max_keypoints,
                                           max_side=opts.local.max_side) if opts.local and opts.whole else None
            error = ""
        except DecodeError as e:
            views, local, error, digest = [(_NO_BOX, _PLACEHOLDER)], None, e.reason, ""
        if not views:  # regions only, and none proposed
            continue
        for v, (box, pixels) in enumerate(views, start=first if not error else 0):
            for k in passthrough:
                out[k].append(batch[k][i])
            out["view"].append(v)
            out["box"].append(box)
            out["image"].append(pixels)
            out["error"].append(error)
            if opts.local_method:
                _append_local(out, local if v == 0 else None)
            if opts.pixel_hash:
                out["pixel_hash"].append(digest)
    return {k: _column(k, v) for k, v in out.items()}


def _pixel_boxes(fractions, size: tuple[int, int]) -> np.ndarray:
    """(R, 4) boxes as fractions of (h, w) `size` -> (R, 4) int32 pixel boxes, at least one pixel each."""
    h, w = size
    boxes = np.round(np.asarray(fractions, np.float64).reshape(-1, 4) * [w, h, w, h]).astype(np.int64)
    limit = np.array([w, h])
    boxes[:, :2] = np.clip(boxes[:, :2], 0, limit - 1)
    boxes[:, 2:] = np.clip(boxes[:, 2:], boxes[:, :2] + 1, limit)
    return boxes.astype(np.int32)


def pixel_digest(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> sha256 hex of its shape and RGB bytes: equal iff the pixels are identical."""
    h = hashlib.sha256(np.asarray(image.shape, np.int64).tobytes())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _append_local(out: dict, local) -> None:
    if local is None:
        out["lf_keypoints"].append(np.zeros((0, 2), np.float32))
        out["lf_descriptors"].append(np.zeros((0, 0), np.uint8))
        out["lf_size"].append(np.zeros(2, np.int32))
    else:
        out["lf_keypoints"].append(local.keypoints)
        out["lf_descriptors"].append(local.descriptors)
        out["lf_size"].append(np.asarray(local.image_size, np.int32))


def _column(name: str, values: list) -> np.ndarray:
    if name in ("image", "lf_keypoints", "lf_descriptors", "error"):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    if name in ("box", "lf_size"):
        return np.stack(values) if values else np.zeros((0, 4 if name == "box" else 2), np.int32)
    return np.asarray(values)


def row_local_features(batch: dict, i: int, method: str) -> LocalFeatures:
    """LocalFeatures of row i of a prepared batch (typed empty for failed rows and region views)."""
    if batch["error"][i] or batch["view"][i]:
        return LocalFeatures.empty(method, (0, 0))
    size = tuple(int(v) for v in batch["lf_size"][i])
    return LocalFeatures(batch["lf_keypoints"][i], batch["lf_descriptors"][i], size, method)


class Embedder:
    """The embedding step of a runner: a prepared batch (`prepare_batch`) -> "embedding" (B, D) float32, zeros
    where "error". model: the descriptor of whole images (view 0); region_model: one of the same descriptor
    space that embeds the region views (view >= 1) instead (None: model)."""

    def __init__(self, model: Descriptor, region_model: Descriptor | None = None):
        self.model = model
        self.region_model = region_model or model

    def __call__(self, batch: dict) -> dict:
        emb = np.zeros((len(batch["error"]), self.model.dim), np.float32)
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        if self.region_model is self.model:
            parts = [(self.model, ok)]
        else:
            parts = [(self.model, [i for i in ok if batch["view"][i] == 0]),
                     (self.region_model, [i for i in ok if batch["view"][i] > 0])]
        for model, rows in parts:
            if rows:
                emb[rows] = model.embed_resized([batch["image"][i] for i in rows])
        out = {k: v for k, v in batch.items() if k != "image"}
        out["embedding"] = emb
        return out
