import numpy as np
import pytest
import timm
import torch
from skimage import data

from copyscope.descriptors import PreprocessCfg, create_descriptor, list_descriptors, resize_image
from copyscope.descriptors.packaged_weights import efficientnet_lite0_state_dict, map_by_position
from copyscope.descriptors.preprocess import normalize_batch, target_size
from copyscope.descriptors.timm_gem import gem


def photos():
    return [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]


def test_registry_lists_and_rejects_unknown():
    assert list_descriptors() == ["sscd", "sscd_distilled", "sscd_torchscript", "timm:<architecture>"]
    with pytest.raises(ValueError, match="known: sscd"):
        create_descriptor("resnet")
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_descriptor("timm:not_a_net")
    with pytest.raises(ValueError, match="unknown descriptor"):
        create_descriptor("timm:")


def test_target_size_rules():
    cfg = PreprocessCfg(resize="short_side", size=288)
    assert target_size(cfg, 375, 500) == (288, 384)
    assert target_size(cfg, 10, 5000) == (288, 864)  # long side capped at max_aspect * size
    assert target_size(PreprocessCfg(resize="square", size=224), 375, 500) == (224, 224)
    with pytest.raises(ValueError, match="unknown resize mode"):
        PreprocessCfg(resize="crop")


def test_resize_and_normalize_shapes():
    cfg = PreprocessCfg(size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    im = resize_image(cfg, data.astronaut())
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    x = normalize_batch(cfg, np.stack([im, im]))
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        resize_image(cfg, np.zeros((5, 5), np.uint8))


@pytest.mark.parametrize("name", ["sscd", "sscd_distilled"])
def test_sscd_onnx_models_tell_copies_from_other_photos(name):
    model = create_descriptor(name, num_threads=1)
    originals = photos()
    crop = originals[0][40:260, 60:400]
    grey = np.repeat(originals[1].mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    emb = model(originals + [crop, grey])
    assert emb.shape == (6, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    sims = emb[4:] @ emb[:4].T
    assert sims.argmax(axis=1).tolist() == [0, 1]
    assert sims[0, 0] > 0.5 and sims[1, 1] > 0.5 and np.delete(sims[0], 0).max() < 0.3


def test_onnx_threads_do_not_spin_between_runs():
    """Idle onnxruntime threads would take the cores from RootSIFT, FAISS and verification in between."""
    model = create_descriptor("sscd_distilled", num_threads=2)
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


def test_batching_by_size_matches_one_by_one():
    model = create_descriptor("sscd_distilled", num_threads=1)
    model.max_batch = 2
    ims = photos() + [data.chelsea()]
    batched = model(ims)
    single = np.concatenate([model([im]) for im in ims])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_gem_matches_formula_and_average_pool_at_p1():
    x = torch.rand(2, 3, 4, 5) + 0.1
    torch.testing.assert_close(gem(x, p=1.0), x.mean(dim=(-2, -1)))
    torch.testing.assert_close(gem(x, p=3.0), x.pow(3).mean(dim=(-2, -1)).pow(1 / 3))


def test_timm_random_weights_forward_and_projection():
    torch.manual_seed(0)
    model = create_descriptor("timm:resnet18", proj_dim=64, image_size=64)
    emb = model(photos()[:2])
    assert emb.shape == (2, 64) and model.dim == 64
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert model.spec()["preprocess"]["size"] == 64


def test_timm_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    a = create_descriptor("timm:resnet18", proj_dim=32, image_size=64)
    path = tmp_path / "ckpt.pth"
    torch.save(a.module.state_dict(), path)
    b = create_descriptor("timm:resnet18", weights=str(path), proj_dim=32, image_size=64)
    ims = photos()[:2]
    np.testing.assert_allclose(a(ims), b(ims), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        create_descriptor("timm:resnet18", weights=str(tmp_path / "missing.pth"))


def test_lite0_packaged_weights_predict_the_right_imagenet_class():
    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(efficientnet_lite0_state_dict(model))
    cfg = PreprocessCfg(resize="square", size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.from_numpy(normalize_batch(cfg, np.stack([resize_image(cfg, data.chelsea()),
                                                        resize_image(cfg, data.coffee())])))
    with torch.inference_mode():
        top = model(x).argmax(-1).tolist()
    assert top[0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    assert top[1] == 967  # espresso


def test_lite0_descriptor_with_imagenet_weights():
    model = create_descriptor("timm:tf_efficientnet_lite0", weights="imagenet", image_size=128)
    assert model.cfg.mean == (0.5, 0.5, 0.5) and model.dim == 1280
    emb = model([data.chelsea(), data.chelsea()[::-1].copy(), data.coffee()])
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    with pytest.raises(ValueError, match="no packaged ImageNet weights"):
        create_descriptor("timm:resnet18", weights="imagenet")


def test_map_by_position_checks_shapes():
    src = {"a": torch.zeros(2), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match="does not fit"):
        map_by_position(src, ["x", "y"], {"x": torch.Size([2]), "y": torch.Size([4])})
    with pytest.raises(ValueError, match="cannot map"):
        map_by_position(src, ["x"], {"x": torch.Size([2])})


def test_sscd_torchscript_from_local_file(tmp_path):
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    path = tmp_path / "tiny.torchscript.pt"
    torch.jit.script(Tiny()).save(str(path))
    model = create_descriptor("sscd_torchscript", weights=str(path))
    assert model.cfg.size == 288 and model.dim == 48
    emb = model(photos()[:2])
    assert emb.shape == (2, 48)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="needs --weights"):
        create_descriptor("sscd_torchscript")


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA provider"):
        create_descriptor("sscd", device="cuda")


TIMM_RANDOM = dict(proj_dim=32, image_size=64)


def test_timm_random_weights_are_seeded_the_same_in_every_build():
    """Two processes (Ray actors, or index and match) building timm:<arch> without weights must agree."""
    ims = photos()[:2]
    before = torch.get_rng_state()
    a = create_descriptor("timm:resnet18", **TIMM_RANDOM)
    torch.rand(7)  # whatever the caller does with the global generator in between
    b = create_descriptor("timm:resnet18", **TIMM_RANDOM)
    np.testing.assert_array_equal(a(ims), b(ims))
    other = create_descriptor("timm:resnet18", seed=1, **TIMM_RANDOM)
    assert np.abs(other(ims) - a(ims)).max() > 1e-3
    assert a.spec()["seed"] == 0 and other.spec()["seed"] == 1
    torch.rand(7)
    after = torch.get_rng_state()
    torch.set_rng_state(before)
    torch.rand(7), torch.rand(7)
    assert torch.equal(torch.get_rng_state(), after)  # building a model never advanced the caller's RNG
    with pytest.raises(ValueError, match="seed must be an integer"):
        create_descriptor("timm:resnet18", seed="0", **TIMM_RANDOM)


def test_timm_seed_recorded_only_where_weights_leave_parameters_random(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save(create_descriptor("timm:resnet18", **TIMM_RANDOM).module.state_dict(), whole)
    assert "seed" not in create_descriptor("timm:resnet18", weights=str(whole), **TIMM_RANDOM).spec()
    backbone = tmp_path / "backbone.pth"
    torch.save(create_descriptor("timm:resnet18", image_size=64).module.backbone.state_dict(), backbone)
    assert "seed" not in create_descriptor("timm:resnet18", weights=str(backbone), image_size=64).spec()
    assert create_descriptor("timm:resnet18", weights=str(backbone), seed=5, **TIMM_RANDOM).spec()["seed"] == 5
    assert "seed" not in create_descriptor("sscd_distilled").spec()


def test_two_embed_actors_give_the_vectors_of_one_in_process_build(tmp_path, ray_local):
    import contextlib

    from PIL import Image

    from copyscope.pipeline.embedding import EmbedSettings
    from copyscope.pipeline.model_spec import ModelSpec
    from copyscope.pipeline.runners import RayRunner
    from copyscope.pipeline.stages import PrepareOptions

    spec = ModelSpec("timm:resnet18", options=TIMM_RANDOM)
    model = spec.build()
    rows = []
    for i, im in enumerate(photos()):
        Image.fromarray(im).save(tmp_path / f"p{i}.png")
        rows.append({"id": f"p{i}", "path": str(tmp_path / f"p{i}.png")})
    runner = RayRunner(EmbedSettings(num_actors=2, threads_per_actor=1, batch_size=1))
    got = {}
    with contextlib.closing(runner):
        for batch in runner.embed(rows, spec, PrepareOptions(preprocess=model.cfg.to_dict())):
            assert not any(batch["error"])
            got.update({str(i): e for i, e in zip(batch["id"], batch["embedding"])})
    want = model(photos())
    assert sorted(got) == [r["id"] for r in rows]
    np.testing.assert_allclose(np.stack([got[r["id"]] for r in rows]), want, atol=1e-5)
