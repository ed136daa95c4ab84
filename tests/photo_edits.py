"""A small copy-detection set from skimage.data photos: references, edited copies, unrelated queries."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

REFERENCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def _edits(image: np.ndarray) -> dict[str, np.ndarray]:
    h, w = image.shape[:2]
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    captioned = image.copy()
    cv2.putText(captioned, "COPY", (w // 8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 0), 8)
    return {
        "crop": image[h // 8 : h * 7 // 8, w // 6 : w * 5 // 6],
        "grey_blur": cv2.GaussianBlur(grey, (7, 7), 0),
        "text": captioned,
        "flip_small": cv2.resize(image[:, ::-1], (w // 3, h // 3), interpolation=cv2.INTER_AREA),
    }


def make_copy_set(folder: Path) -> dict[str, str]:
    """Write folder/refs/<name>.jpg and folder/queries/<name>_<edit>.jpg -> {query_id: reference_id}."""
    refs, queries = folder / "refs", folder / "queries"
    refs.mkdir(parents=True), queries.mkdir(parents=True)
    truth = {}
    for name in REFERENCES:
        image = getattr(data, name)()
        Image.fromarray(image).save(refs / f"{name}.jpg", quality=90)
        for edit, edited in _edits(image).items():
            Image.fromarray(np.ascontiguousarray(edited)).save(queries / f"{name}_{edit}.jpg", quality=75)
            truth[f"{name}_{edit}"] = name
    Image.fromarray(data.camera()).save(queries / "unrelated_camera.png")
    return truth
