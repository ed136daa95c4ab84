import json

import numpy as np
import pytest
from skimage import data

import copyscope.pipeline.augment as A
from copyscope.pipeline.augment.imaging import box_pixels
from copyscope.pipeline.augment.templates import (
    FAMILIES, crop_pair, fine_grained_group, sample_templates, template_step,
)

CTX = A.EditContext({"coffee": data.coffee()[::4, ::4].copy()})


def test_templates_are_frozen_but_for_the_position_and_replay_from_json():
    templates = sample_templates(np.random.default_rng(0), 2, ["coffee", "coffee"])
    assert [t.name for t in templates] == [f"{f}_{i}" for f in FAMILIES for i in range(2)]
    assert templates == sample_templates(np.random.default_rng(0), 2, ["coffee", "coffee"])
    photos = [data.astronaut()[::8, ::8], data.chelsea()[::8, ::8]]
    for t in templates:
        steps = [template_step(t, np.random.default_rng(i)) for i in range(2)]
        for name, params in steps:
            assert name == t.edit and {k: v for k, v in params.items() if k not in ("x", "y")} == \
                {k: v for k, v in t.params.items() if k not in ("x", "y")}
        if t.family != "background":
            assert steps[0] == steps[1]
        out = [A.apply_chain(p, json.loads(json.dumps([s])), CTX) for p, s in zip(photos, steps)]
        assert all(o.ndim == 3 for o in out)
    with pytest.raises(ValueError, match="host"):
        sample_templates(np.random.default_rng(0), 2, ["coffee"])


@pytest.mark.parametrize("shape", [(2, 2), (3, 7), (100, 41), (41, 100), (9, 10), (480, 640)])
def test_crop_pairs_never_overlap(shape):
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, b = crop_pair(rng, *shape)
        (t0, b0, l0, r0), (t1, b1, l1, r1) = box_pixels(a, *shape), box_pixels(b, *shape)
        assert not (t0 < b1 and t1 < b0 and l0 < r1 and l1 < r0)
        image = np.zeros((*shape, 3), np.uint8)
        assert A.apply_chain(image, [("crop", a)]).size and A.apply_chain(image, [("crop", b)]).size
    with pytest.raises(ValueError, match="overlap"):
        crop_pair(rng, 1, 1)


def test_fine_grained_groups():
    assert fine_grained_group("n02085620_chihuahua.jpg") == "dog" == fine_grained_group("sub/n02113978_mexican")
    assert fine_grained_group("n01514668_cock") == "bird" == fine_grained_group("n02058221_albatross.jpg")
    assert fine_grained_group("n01728572_thunder_snake") == "snake"
    assert fine_grained_group("n01704323_triceratops") is None and fine_grained_group("astronaut") is None
