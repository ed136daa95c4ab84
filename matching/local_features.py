"""Local features for pair verification: keypoints + descriptors from OpenCV, and their compact storage.

    image (H, W, 3) uint8 RGB -> LocalFeatures: keypoints (N, 2) float32 xy in pixels of the original
    image (pixel centres at integers), descriptors (N, D) uint8, image_size (H, W), method.

Methods (`LOCAL_METHODS`): `rootsift` (default; SIFT, L1-normalised, square-rooted, stored as
uint8 = round(512 * value) clipped at 255, compared with L2), `sift` (OpenCV's SIFT bytes), `orb`
(32-byte rBRIEF, Hamming) and `akaze` (61-byte MLDB, Hamming), the last two being the fast options.
AKAZE is in OpenCV 5's contrib build only (opencv-contrib-python-headless); `available_methods()`
says which methods the installed OpenCV has.
Learned features (`matching.learned_matchers`) use the same record with float32 descriptors.

Mirrored copies: none of these descriptors is mirror invariant, so a query is also matched as its
mirror image. `mirror_features` gives the features of the horizontally flipped image expressed in
the original image's frame (so the geometry found with them maps the original query, with a
negative determinant); for SIFT and RootSIFT it only permutes descriptor bins, for ORB and AKAZE
the flipped image is extracted again (`extract_local_features(..., mirror=True)`).
`extract_query_features` gives both, the cheapest way for each method.

Storage (`to_bytes`, `from_bytes`): one blob per image, keypoints as uint16 fixed point of the image
size (1/65535 of a side: under 0.07 px up to 4096 px), descriptors as uint8 (float descriptors as
float16), behind a 19-byte header.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import cv2
import numpy as np

LOCAL_METHODS = ("rootsift", "sift", "orb", "akaze")
BINARY_METHODS = ("orb", "akaze")
_SIFT_METHODS = ("rootsift", "sift")
_DESCRIPTOR_DIMS = {"rootsift": 128, "sift": 128, "orb": 32, "akaze": 61}
_ROOTSIFT_SCALE = 512.0  # RootSIFT components are <= ~0.33 in practice; 512 keeps ~100 levels below 0.2
_KEYPOINT_STEPS = 65535  # uint16 fixed point over the image side


@dataclasses.dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and descriptors of one image.

    keypoints: (N, 2) float32 xy in pixels of the original image.
    descriptors: (N, D) uint8 (float32 for learned features).
    image_size: (H, W) of the original image.
    method: the extractor's name, e.g. "rootsift".
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    method: str

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, method: str, image_size: tuple[int, int], dim: int | None = None,
              dtype: type = np.uint8) -> LocalFeatures:
        """Typed empty features: (0, 2) float32 keypoints, (0, D) descriptors."""
        dim = _DESCRIPTOR_DIMS.get(method, 0) if dim is None else dim
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype), tuple(image_size), method)

    def equals(self, other: LocalFeatures) -> bool:
        """Exact equality of every field (arrays compared element-wise, dtypes included)."""
        return (self.method == other.method and self.image_size == other.image_size
                and _same_array(self.keypoints, other.keypoints)
                and _same_array(self.descriptors, other.descriptors))


@dataclasses.dataclass(frozen=True)
class LocalSpec:
    """How local features are extracted, stored and matched (it travels in the index manifest).

    method, max_side, max_keypoints: extraction (queries keep all max_keypoints). stored_keypoints: the
    strongest kept for a reference (None: all). projection: packaged PCA of the stored descriptors
    (matching.compact_features; None: raw bytes). ratio: Lowe's ratio of the matcher. The default
    stores at most 23,939 bytes a reference, chosen by measurement (README, feature store).
    """

    method: str = "rootsift"
    max_side: int = 512
    max_keypoints: int = 1000
    stored_keypoints: int | None = 460
    projection: str | None = "rootsift_pca48"
    ratio: float = 0.65

    def __post_init__(self):
        if self.projection and self.method != "rootsift":
            raise ValueError(f"the {self.projection} projection is for RootSIFT, not {self.method}; "
                             "use projection=None")

    @classmethod
    def uncompressed(cls, method: str = "rootsift") -> LocalSpec:
        """Every extracted keypoint, raw descriptor bytes, ratio 0.75 (before compact storage: ~95 KB an image)."""
        return cls(method, stored_keypoints=None, projection=None, ratio=0.75)

    @classmethod
    def for_method(cls, method: str) -> LocalSpec:
        """The default for a method: compact RootSIFT (ratio 0.65, tuned for its codes); other methods stored
        whole, with the classic ratio 0.75."""
        return cls() if method == "rootsift" else cls(method, stored_keypoints=None, projection=None, ratio=0.75)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def _akaze_factory() -> Callable[..., cv2.Feature2D] | None:
    """cv2.AKAZE_create: in OpenCV 4, or in the contrib build's xfeatures2d from OpenCV 5 on; None if absent."""
    return getattr(cv2, "AKAZE_create", None) or getattr(getattr(cv2, "xfeatures2d", None), "AKAZE_create", None)


def available_methods() -> tuple[str, ...]:
    """The LOCAL_METHODS this OpenCV build provides (AKAZE needs opencv-contrib-python from OpenCV 5 on)."""
    return tuple(m for m in LOCAL_METHODS if m != "akaze" or _akaze_factory() is not None)


def _detector(method: str, max_keypoints: int) -> cv2.Feature2D:
    if method in _SIFT_METHODS:
        return cv2.SIFT_create(nfeatures=max_keypoints)
    if method == "orb":
        return cv2.ORB_create(nfeatures=max_keypoints)
    if method == "akaze":
        create = _akaze_factory()
        if create is None:
            raise ImportError(f"AKAZE is not in OpenCV {cv2.__version__} (OpenCV 5 moved it to contrib): "
                              "install opencv-contrib-python-headless instead of opencv-python-headless")
        return create(threshold=0.0005)  # half the default: enough points on 512 px images
    raise ValueError(f"unknown local feature method {method!r}; known: {', '.join(LOCAL_METHODS)}")


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB or (H, W) uint8 -> (H, W) uint8."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.dtype} {image.shape}")
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W[, C]) -> (h, w[, C]) with max(h, w) <= max_side, by INTER_AREA; unchanged if small enough."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def to_original_pixels(xy: np.ndarray, small_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(N, 2) xy in an image of `small_size` (h, w) -> (N, 2) float32 xy in the same image at `size`.

    Pixel centres sit at integers in both: x + 0.5 scales by w / w_small.
    """
    factor = np.array([size[1] / small_size[1], size[0] / small_size[0]])
    return ((np.asarray(xy, np.float64) + 0.5) * factor - 0.5).astype(np.float32)


def _rootsift(descriptors: np.ndarray) -> np.ndarray:
    """(N, 128) float32 SIFT -> (N, 128) uint8 RootSIFT."""
    l1 = np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-12)
    return np.clip(np.rint(np.sqrt(descriptors / l1) * _ROOTSIFT_SCALE), 0, 255).astype(np.uint8)


def _descriptor_bytes(method: str, descriptors: np.ndarray) -> np.ndarray:
    if method == "rootsift":
        return _rootsift(descriptors)
    if method == "sift":  # OpenCV's SIFT values are already integers in 0..255
        return np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
    return descriptors


def extract_local_features(image: np.ndarray, method: str = "rootsift", *, max_keypoints: int = 1000,
                           max_side: int = 512, mirror: bool = False) -> LocalFeatures:
    """(H, W, 3) uint8 RGB -> LocalFeatures with at most `max_keypoints`, the strongest by response.

    The image is shrunk (INTER_AREA) so that its long side is at most `max_side`, turned grey and
    described; keypoints are scaled back to original pixels. `mirror=True` describes the
    horizontally flipped image, keypoints still in the original frame (see `mirror_features`).
    """
    if mirror and method in _SIFT_METHODS:
        return mirror_features(extract_local_features(image, method, max_keypoints=max_keypoints,
                                                      max_side=max_side))
    detector = _detector(method, max_keypoints)
    grey = to_grey(image)
    small = shrink(grey, max_side)
    if mirror:
        small = np.ascontiguousarray(small[:, ::-1])
    keypoints, descriptors = detector.detectAndCompute(small, None)
    if descriptors is None or not keypoints:
        return LocalFeatures.empty(method, grey.shape)
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:max_keypoints]
    xy = np.array([keypoints[i].pt for i in order], np.float64)
    if mirror:
        xy[:, 0] = small.shape[1] - 1 - xy[:, 0]
    xy = to_original_pixels(xy, small.shape, grey.shape)
    return LocalFeatures(xy, _descriptor_bytes(method, descriptors[order]), grey.shape, method)


def _sift_mirror_permutation() -> np.ndarray:
    """Descriptor index map of SIFT under a horizontal flip of the image.

    SIFT bins are (row, column, orientation), 4 x 4 x 8, in the frame of the keypoint's dominant
    orientation. Mirroring the image mirrors that frame across its x axis: rows reverse and relative
    orientations negate (bin o -> -o mod 8); columns stay.
    """
    return np.array([((3 - row) * 4 + col) * 8 + (-ori) % 8
                     for row in range(4) for col in range(4) for ori in range(8)])


_SIFT_MIRROR = _sift_mirror_permutation()


def mirror_features(features: LocalFeatures) -> LocalFeatures:
    """SIFT / RootSIFT features -> those of the horizontally flipped image, in the original frame.

    Keypoints are unchanged, descriptor bins are permuted: matching these against a reference finds
    a mirrored copy, with a transform of negative determinant from the original query. ORB and AKAZE
    have no such permutation: use `extract_local_features(image, method, mirror=True)`.
    """
    if features.method not in _SIFT_METHODS:
        raise ValueError(f"mirror_features permutes SIFT bins and supports {_SIFT_METHODS}, got "
                         f"{features.method!r}; extract the flipped image with mirror=True instead")
    return dataclasses.replace(features, descriptors=np.ascontiguousarray(features.descriptors[:, _SIFT_MIRROR]))


def extract_box_features(image: np.ndarray, box, method: str = "rootsift", *, side: int = 512,
                         max_keypoints: int = 1000) -> LocalFeatures:
    """(H, W, 3) uint8 RGB and an (x0, y0, x1, y1) box of it -> the box's features, looked at closer: the box
    upscaled (INTER_CUBIC) so that its long side is `side` (a larger box is described at `side`), and its keypoints
    mapped back to pixels of the whole image (image_size (H, W)), so that they compare with the whole image's.
    """
    height, width = image.shape[:2]
    x0, x1 = np.clip(np.asarray(box[0::2], np.int64), 0, width).tolist()
    y0, y1 = np.clip(np.asarray(box[1::2], np.int64), 0, height).tolist()
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} is empty inside a {width}x{height} image")
    view = image[y0:y1, x0:x1]
    scale = side / max(view.shape[:2])
    if scale > 1:
        view = cv2.resize(view, (round((x1 - x0) * scale), round((y1 - y0) * scale)), interpolation=cv2.INTER_CUBIC)
    features = extract_local_features(view, method, max_keypoints=max_keypoints, max_side=side)
    # pixel centres at integers: x in the view is (x_box + 0.5) * sx - 0.5
    sx, sy = view.shape[1] / (x1 - x0), view.shape[0] / (y1 - y0)
    keypoints = (features.keypoints + 0.5) / np.array([sx, sy], np.float32) - 0.5 + np.array([x0, y0], np.float32)
    return dataclasses.replace(features, keypoints=keypoints.astype(np.float32), image_size=(height, width))


def extract_query_features(image: np.ndarray, method: str = "rootsift", *, max_keypoints: int = 1000,
                           max_side: int = 512) -> tuple[LocalFeatures, LocalFeatures]:
    """(H, W, 3) uint8 RGB -> (features, mirrored features) of a query, for `verify_pair(mirrored=)`.

    SIFT / RootSIFT mirror by a descriptor permutation (free); ORB / AKAZE describe the image twice.
    """
    features = extract_local_features(image, method, max_keypoints=max_keypoints, max_side=max_side)
    if method in _SIFT_METHODS:
        return features, mirror_features(features)
    return features, extract_local_features(image, method, max_keypoints=max_keypoints, max_side=max_side,
                                            mirror=True)


def _quantise_keypoints(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    unit = (keypoints + 0.5) / np.array([w, h], np.float64)
    return np.clip(np.rint(unit * _KEYPOINT_STEPS), 0, _KEYPOINT_STEPS).astype(np.uint16)


def _dequantise_keypoints(codes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    h, w = image_size
    return (codes.astype(np.float64) / _KEYPOINT_STEPS * np.array([w, h]) - 0.5).astype(np.float32)


def _store_descriptors(descriptors: np.ndarray) -> np.ndarray:
    return descriptors if descriptors.dtype == np.uint8 else descriptors.astype(np.float16)


def _load_descriptors(stored: np.ndarray) -> np.ndarray:
    return stored if stored.dtype == np.uint8 else stored.astype(np.float32)


_BLOB_HEADER = struct.Struct("<4sIIIHB")  # magic, height, width, N, D, descriptor dtype (0 uint8, 1 float16)
_BLOB_MAGIC = b"LF01"


def to_bytes(features: LocalFeatures) -> bytes:
    """LocalFeatures -> a compact blob: header, (N, 2) uint16 keypoints, (N, D) uint8 (or float16)
    descriptors. The method is not stored: the feature store records it once."""
    kp = _quantise_keypoints(features.keypoints, features.image_size)
    desc = _store_descriptors(features.descriptors)
    h, w = features.image_size
    header = _BLOB_HEADER.pack(_BLOB_MAGIC, h, w, len(kp), desc.shape[1] if desc.ndim == 2 else 0,
                               int(desc.dtype != np.uint8))
    return header + kp.tobytes() + np.ascontiguousarray(desc).tobytes()


def from_bytes(blob: bytes, method: str) -> LocalFeatures:
    """Inverse of `to_bytes`: keypoints within 1/65535 of the image side, descriptors exact (uint8)."""
    magic, h, w, n, d, is_float = _BLOB_HEADER.unpack_from(blob)
    if magic != _BLOB_MAGIC:
        raise ValueError("not a local-features blob (bad magic)")
    offset = _BLOB_HEADER.size
    kp = np.frombuffer(blob, np.uint16, 2 * n, offset).reshape(n, 2)
    dtype = np.float16 if is_float else np.uint8
    desc = np.frombuffer(blob, dtype, n * d, offset + kp.nbytes).reshape(n, d)
    return LocalFeatures(_dequantise_keypoints(kp, (h, w)), _load_descriptors(desc.copy()), (h, w), method)
