"""Region proposals: sub-regions of a query that are searched as extra queries.

A global descriptor of a whole query misses a reference that covers only part of it: a photo
pasted small into another photo, shown inside a screenshot or meme frame, or heavily cropped and
padded. `propose_regions` returns boxes worth embedding on their own, best first:

1. detected rectangles (when `detect`):
   - frame cuts: a recursive XY-cut that trims near-constant bands (screenshot and meme frames,
     padding, caption gaps) and splits the image at them, keeping the blocks left over;
   - edge rectangles: long straight horizontal and vertical edges (the border of a pasted photo
     or of a frame), paired into axis-aligned rectangles whose sides they support;
2. multi-scale tiles: a centre crop, an overlapping 2x2 grid and a 3x3 grid.

Boxes are (x0, y0, x1, y1) int32 pixels, x1/y1 exclusive; the full image is never one of them
(the caller searches it anyway), and near-duplicates are removed by IoU. All detection runs on a
copy whose long side is `WORK_SIDE` pixels, so the cost does not grow with the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

WORK_SIDE = 256          # long side (pixels) of the copy detection runs on
MIN_REGION_PX = 32       # no region is smaller than this on either side, in the original image
FULL_IOU = 0.85          # a box this close to the full image is left out
DEDUP_IOU = 0.7          # a box this close to a better-ranked one is left out
# (grid, side fraction): a g x g grid of tiles, each `fraction` of the image's width and height.
DEFAULT_TILES: tuple[tuple[int, float], ...] = ((1, 0.6), (2, 0.6), (3, 0.45))

FLAT_STD = 4.0           # a row or column of a block is flat when its grey std is below this
MIN_GAP = 2              # flat runs at least this long (work pixels) split a block
EDGE_STEP = 16           # colour step over two pixels (max over channels, 0..255) that is an edge
MAX_LINES = 16           # longest straight lines kept per direction ...
MAX_ENDS = 4             # ... and the ends of this many longest lines of the other direction
MIN_SUPPORT = 0.5        # every inner side of an edge rectangle is at least this much edge ...
MEAN_SUPPORT = 0.75      # ... and its inner sides are on average at least this much


def propose_regions(image: np.ndarray, *, max_regions: int = 12, max_detected: int = 4,
                    min_side_frac: float = 0.15, detect: bool = True,
                    tiles: Sequence[tuple[int, float]] = DEFAULT_TILES) -> np.ndarray:
    """(H, W, 3) uint8 -> (R, 4) int32 boxes (x0, y0, x1, y1), R <= max_regions, best first.

    max_detected: at most this many detected rectangles, ranked before the tiles.
    min_side_frac: each box is at least this fraction of the image's width and height (and
        at least MIN_REGION_PX pixels) on its sides.
    detect: look for frames and pasted rectangles; False gives tiles only.
    tiles: (grid, fraction) tile layouts, in priority order (see `tile_boxes`).
    Tiny images give a (0, 4) array.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    min_w, min_h = max(MIN_REGION_PX, min_side_frac * width), max(MIN_REGION_PX, min_side_frac * height)
    if width <= min_w or height <= min_h or max_regions <= 0:
        return np.zeros((0, 4), np.int32)
    detected = detect_rectangles(image, min_side_frac=min_side_frac) if detect else np.zeros((0, 4), np.int32)
    detected = _select(detected, height, width, min_w, min_h, max_detected)
    tiled = np.concatenate([tile_boxes(height, width, g, f) for g, f in tiles] or [np.zeros((0, 4), np.int32)])
    return _select(np.concatenate([detected, tiled]), height, width, min_w, min_h, max_regions)


def crop_boxes(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """(H, W, C) image, (R, 4) boxes -> R crops, C-contiguous copies (box clipped to the image)."""
    height, width = image.shape[:2]
    crops = []
    for x0, y0, x1, y1 in np.asarray(boxes, np.int64).reshape(-1, 4):
        x0, x1 = np.clip([x0, x1], 0, width)
        y0, y1 = np.clip([y0, y1], 0, height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {(x0, y0, x1, y1)} is empty inside a {width}x{height} image")
        crops.append(np.ascontiguousarray(image[y0:y1, x0:x1]).copy())
    return crops


def tile_boxes(height: int, width: int, grid: int, fraction: float) -> np.ndarray:
    """A grid x grid layout of tiles `fraction` of each side, evenly spread -> (grid**2, 4) int32.

    grid=1 is the centre crop; with grid * fraction > 1 neighbouring tiles overlap. Tiles are
    ordered centre-most first (row-major among equals), so a cut-off list stays balanced.
    """
    if grid < 1 or not 0 < fraction <= 1:
        raise ValueError(f"need grid >= 1 and 0 < fraction <= 1, got {grid}, {fraction}")
    tw, th = max(1, round(fraction * width)), max(1, round(fraction * height))
    steps = np.linspace(0.0, 1.0, grid) if grid > 1 else np.array([0.5])
    xs, ys = np.round(steps * (width - tw)).astype(int), np.round(steps * (height - th)).astype(int)
    y0, x0 = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
    boxes = np.stack([x0, y0, x0 + tw, y0 + th], axis=1).astype(np.int32)
    off_centre = np.abs(2 * x0 + tw - width) / width + np.abs(2 * y0 + th - height) / height
    return boxes[np.argsort(np.round(off_centre, 6), kind="stable")]


def detect_rectangles(image: np.ndarray, *, min_side_frac: float = 0.15) -> np.ndarray:
    """(H, W, 3) uint8 -> (N, 4) int32 frame cuts then edge rectangles, each best first, in pixels."""
    small, scale = _work_copy(image)
    sh, sw = small.shape[:2]
    min_w, min_h = max(2, round(min_side_frac * sw)), max(2, round(min_side_frac * sh))
    found = np.concatenate([frame_cuts(small, min_w, min_h), edge_rectangles(small, min_w, min_h)])
    return _to_pixels(found, scale, image.shape[0], image.shape[1])


def frame_cuts(small: np.ndarray, min_w: int, min_h: int) -> np.ndarray:
    """Recursive XY-cut at near-constant bands: (h, w, 3) uint8 -> (N, 4) int32 blocks, largest first.

    Each block has its flat margins trimmed and is split at inner flat runs until none is left;
    the final blocks at least min_w x min_h are returned. A photo without flat bands gives none.
    """
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blocks: list[tuple[int, int, int, int]] = []
    _cut(grey, (0, 0, grey.shape[1], grey.shape[0]), min_w, min_h, blocks, depth=0)
    full = (0, 0, grey.shape[1], grey.shape[0])
    boxes = np.array([b for b in dict.fromkeys(blocks) if b != full], np.int32).reshape(-1, 4)
    return boxes[np.argsort(-_area(boxes), kind="stable")]


def edge_rectangles(small: np.ndarray, min_w: int, min_h: int) -> np.ndarray:
    """Axis-aligned rectangles outlined by long straight edges: (h, w, 3) uint8 -> (N, 4) int32.

    Candidate sides are the image borders, the rows (columns) of the MAX_LINES longest straight
    horizontal (vertical) segments, and the ends of the MAX_ENDS longest segments of the other
    direction (a weak side of a pasted photo still ends the strong ones). Every pair of rows with
    every pair of columns makes a rectangle; it is kept when at least two sides are inner (not on
    the image border), each inner side is at least MIN_SUPPORT covered by straight edge and all
    of them MEAN_SUPPORT on average. Sorted by mean support (to 0.1), then area.
    """
    h_map, v_map = _straight_edges(small, min_w, min_h)
    h_rows, h_starts, h_stops = _segments(h_map, min_w)
    v_cols, v_starts, v_stops = _segments(np.ascontiguousarray(v_map.T), min_h)
    sh, sw = small.shape[:2]
    ys = np.r_[0, sh, _spread(h_rows, MAX_LINES), _spread(np.r_[v_starts[:MAX_ENDS], v_stops[:MAX_ENDS]])]
    xs = np.r_[0, sw, _spread(v_cols, MAX_LINES), _spread(np.r_[h_starts[:MAX_ENDS], h_stops[:MAX_ENDS]])]
    x0, y0, x1, y1 = _all_rectangles(np.unique(ys), np.unique(xs), min_w, min_h)
    h_sum = np.pad(np.cumsum(h_map, axis=1, dtype=np.int32), ((0, 0), (1, 0)))
    v_sum = np.pad(np.cumsum(v_map, axis=0, dtype=np.int32), ((1, 0), (0, 0))).T
    support = np.stack([_coverage(h_sum, y0, x0, x1), _coverage(h_sum, y1, x0, x1),
                        _coverage(v_sum, x0, y0, y1), _coverage(v_sum, x1, y0, y1)], axis=1)
    inner = np.stack([y0 > 0, y1 < sh, x0 > 0, x1 < sw], axis=1)
    n_inner = inner.sum(axis=1)
    mean = np.where(inner, support, 0).sum(axis=1) / np.maximum(n_inner, 1)
    worst = np.where(inner, support, 1).min(axis=1)
    ok = (n_inner >= 2) & (worst >= MIN_SUPPORT) & (mean >= MEAN_SUPPORT)
    boxes = np.stack([x0, y0, x1, y1], axis=1)[ok].astype(np.int32)
    order = np.lexsort((-_area(boxes), -np.round(mean[ok], 1)))
    return boxes[order].reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) boxes -> (N, M) float64 intersection over union."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def _work_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W, 3) -> the image with long side <= WORK_SIDE, and the factor back to pixels."""
    height, width = image.shape[:2]
    scale = max(height, width) / WORK_SIDE
    if scale <= 1:
        return np.ascontiguousarray(image), 1.0
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, width / size[0]


def _to_pixels(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Boxes on the work copy -> (N, 4) int32 boxes in pixels of the (height, width) image."""
    out = np.round(boxes.astype(np.float64) * scale)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out.astype(np.int32).reshape(-1, 4)


def _cut(grey: np.ndarray, box: tuple[int, int, int, int], min_w: int, min_h: int,
         out: list, depth: int, max_depth: int = 4) -> None:
    """Trim flat bands off `box`, then split it at inner flat runs (rows first), recursively."""
    x0, y0, x1, y1 = box
    block = grey[y0:y1, x0:x1]
    rows, cols = _flat(block, axis=1), _flat(block, axis=0)
    if rows.all() or cols.all():
        return
    r0, r1 = _active_span(rows)
    c0, c1 = _active_span(cols)
    x0, y0, x1, y1 = x0 + c0, y0 + r0, x0 + c1, y0 + r1
    if x1 - x0 < min_w or y1 - y0 < min_h:
        return
    parts = _split(rows[r0:r1], y0, MIN_GAP) if depth < max_depth else []
    if parts:
        for a, b in parts:
            _cut(grey, (x0, a, x1, b), min_w, min_h, out, depth + 1)
        return
    parts = _split(cols[c0:c1], x0, MIN_GAP) if depth < max_depth else []
    if parts:
        for a, b in parts:
            _cut(grey, (a, y0, b, y1), min_w, min_h, out, depth + 1)
        return
    out.append((x0, y0, x1, y1))


def _flat(block: np.ndarray, axis: int) -> np.ndarray:
    """Rows (axis=1) or columns (axis=0) of a grey block whose std is below FLAT_STD -> bool."""
    return block.std(axis=axis) < FLAT_STD


def _active_span(flat: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the non-flat entries of a 1-d mask with at least one."""
    idx = np.flatnonzero(~flat)
    return int(idx[0]), int(idx[-1]) + 1


def _split(flat: np.ndarray, offset: int, min_gap: int) -> list[tuple[int, int]]:
    """Spans between flat runs of at least min_gap (the mask starts and ends non-flat)."""
    edges = np.flatnonzero(np.diff(np.r_[0, flat.astype(np.int8), 0]))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_gap]
    if not runs:
        return []
    starts = [0] + [b for _, b in runs]
    ends = [a for a, _ in runs] + [len(flat)]
    return [(offset + s, offset + e) for s, e in zip(starts, ends, strict=True)]


def _straight_edges(small: np.ndarray, min_w: int, min_h: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) -> horizontal and vertical straight-edge maps, (h, w) uint8 0/1 each.

    A horizontal edge pixel is a colour step across rows (max over channels of the central
    difference) of at least EDGE_STEP that is a local maximum across rows, so texture thins to
    curves; it is widened by a pixel across to tolerate jitter, then the map is opened by a row
    half the minimum region width long: only nearly straight runs at least that long survive.
    Vertical edges alike.
    """
    gy, gx = np.zeros(small.shape[:2], np.uint8), np.zeros(small.shape[:2], np.uint8)
    gy[1:-1] = _channel_max(cv2.absdiff(small[2:], small[:-2]))
    gx[:, 1:-1] = _channel_max(cv2.absdiff(small[:, 2:], small[:, :-2]))
    h_map = cv2.dilate(_ridge(gy, axis=0), np.ones((3, 1), np.uint8))
    v_map = cv2.dilate(_ridge(gx, axis=1), np.ones((1, 3), np.uint8))
    h_map = cv2.morphologyEx(h_map, cv2.MORPH_OPEN, np.ones((1, max(3, min_w // 2)), np.uint8))
    v_map = cv2.morphologyEx(v_map, cv2.MORPH_OPEN, np.ones((max(3, min_h // 2), 1), np.uint8))
    return h_map, v_map


def _channel_max(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) -> (h, w) maximum over channels."""
    return np.maximum(np.maximum(image[:, :, 0], image[:, :, 1]), image[:, :, 2])


def _ridge(grad: np.ndarray, axis: int) -> np.ndarray:
    """Pixels of a gradient map >= EDGE_STEP and not below either neighbour along `axis` -> uint8 0/1."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 1)
    g = np.pad(grad, pad)
    prev, nxt = np.take(g, range(g.shape[axis] - 2), axis), np.take(g, range(2, g.shape[axis]), axis)
    return ((grad >= EDGE_STEP) & (grad >= prev) & (grad >= nxt)).astype(np.uint8)


def _segments(edge_map: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straight runs of a horizontal edge map at least min_length long, longest first.

    -> (N,) centre rows, (N,) start columns, (N,) stop columns (exclusive), int64.
    """
    _, _, stats, _ = cv2.connectedComponentsWithStats(edge_map, connectivity=8)
    stats = stats[1:][stats[1:, cv2.CC_STAT_WIDTH] >= min_length].astype(np.int64)
    stats = stats[np.argsort(-stats[:, cv2.CC_STAT_WIDTH], kind="stable")]
    left, width = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_WIDTH]
    return stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT] // 2, left, left + width


def _spread(positions: np.ndarray, limit: int | None = None, gap: int = 2) -> np.ndarray:
    """The first positions (in order) more than `gap` from every one taken before, at most `limit`."""
    picked: list[int] = []
    for p in positions:
        if limit is not None and len(picked) == limit:
            break
        if all(abs(int(p) - q) > gap for q in picked):
            picked.append(int(p))
    return np.array(picked, np.int64)


def _all_rectangles(ys: np.ndarray, xs: np.ndarray, min_w: int, min_h: int) -> tuple[np.ndarray, ...]:
    """Sorted candidate rows and columns -> x0, y0, x1, y1 (each (N,)) of every rectangle >= min size."""
    iy0, iy1 = np.triu_indices(len(ys), 1)
    ix0, ix1 = np.triu_indices(len(xs), 1)
    y0, y1 = np.repeat(ys[iy0], len(ix0)), np.repeat(ys[iy1], len(ix0))
    x0, x1 = np.tile(xs[ix0], len(iy0)), np.tile(xs[ix1], len(iy0))
    keep = (x1 - x0 >= min_w) & (y1 - y0 >= min_h)
    return x0[keep], y0[keep], x1[keep], y1[keep]


def _coverage(cum: np.ndarray, line: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Fraction of [start, stop) on row `line` of an edge map covered by edge; `cum` is its row cumsum,
    padded with a leading zero column. Lines past the last row read the last row."""
    line = np.clip(line, 0, cum.shape[0] - 1)
    return (cum[line, stop] - cum[line, start]) / np.maximum(stop - start, 1)


def _select(boxes: np.ndarray, height: int, width: int, min_w: float, min_h: float, limit: int) -> np.ndarray:
    """Drop boxes too small or too close to the full image, then greedy IoU dedup in order."""
    boxes = boxes.reshape(-1, 4)
    size_ok = (boxes[:, 2] - boxes[:, 0] >= min_w) & (boxes[:, 3] - boxes[:, 1] >= min_h)
    not_full = box_iou(boxes, np.array([[0, 0, width, height]]))[:, 0] < FULL_IOU
    boxes = boxes[size_ok & not_full]
    kept: list[int] = []
    for i in range(len(boxes)):
        if len(kept) == limit:
            break
        if not kept or box_iou(boxes[i], boxes[kept]).max() < DEDUP_IOU:
            kept.append(i)
    return boxes[kept].astype(np.int32).reshape(-1, 4)


def _area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N,) float64 areas."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
