"""Parts of `vidrestore train`: degradation presets, FaceUNet, its file, schedule, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vidrestore.degrade import resolve
from vidrestore.errors import ConfigError
from vidrestore.models import ModelStore, load_image_model
from vidrestore.models.arch.face_unet import FaceUNet
from vidrestore.models.registry import REGISTRY
from vidrestore.stages.restore import FaceRestorer
from vidrestore.train.config import TrainConfig, config_from_dict, load_train_config
from vidrestore.train.degradation import PRESETS, Degrader, frame_recipe, get_preset
from vidrestore.train.trainer import build_model, learning_rate, update_ema


def _face() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128]
    base = np.stack([x, y, (x + y) / 2], -1) * 1.5 + rng.normal(0, 10, (128, 128, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_degradation_is_reproducible_per_sample_and_differs_between_samples():
    degrader = Degrader(get_preset("video"), seed=4)
    image = _face()
    assert np.array_equal(degrader(image, 7), degrader(image, 7))
    assert degrader.recipe(7) == Degrader(get_preset("video"), seed=4).recipe(7)
    assert degrader.recipe(7) != degrader.recipe(8)
    assert degrader(image, 7).shape == image.shape
    assert Degrader(get_preset("video"), seed=5).recipe(7) != degrader.recipe(7)


def test_the_gfpgan_preset_has_gfpgans_published_ranges():
    ranges = PRESETS["gfpgan"].ranges
    assert ranges["blur.sigma"] == (0.1, 10.0) and ranges["downscale.factor"] == (0.8, 8.0)
    assert ranges["noise.sigma"] == (0.0, 20.0) and ranges["jpeg.quality"] == (60, 100)
    recipes = [Degrader(PRESETS["gfpgan"], 0).recipe(i) for i in range(200)]
    factors = [p["factor"] for r in recipes for n, p in r if n == "downscale"]
    assert 0.8 <= min(factors) < 1.5 and 6 < max(factors) <= 8.0


def test_every_step_of_the_presets_runs_including_the_codec():
    overrides = {"prob": {**{name: 1.0 for name in PRESETS["video"].prob},
                          "clean": 0.0, "light": 0.0}}
    degrader = Degrader(get_preset("video", overrides), seed=1)
    names = [n for n, _ in degrader.recipe(0)]
    assert names == ["blur", "motion", "downscale", "cast", "noise", "jpeg", "codec"]
    out = degrader(_face(), 0)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_unknown_overrides_are_refused():
    with pytest.raises(ConfigError, match="unknown steps"):
        get_preset("video", {"prob": {"sharpen": 1.0}})
    with pytest.raises(ConfigError, match="unknown"):
        get_preset("nope")


def test_the_frame_recipe_is_a_valid_degrade_recipe():
    steps = frame_recipe(get_preset("video"), seed=3)
    fixed = resolve(steps, 3, "video")
    assert [s.name for s in fixed] == ["blur", "downscale", "noise", "codec"]
    assert fixed == resolve(frame_recipe(get_preset("video"), seed=3), 3, "video")


def test_face_unet_starts_as_the_identity_and_faces_stay_independent():
    torch.manual_seed(0)
    net = FaceUNet((8, 16, 16, 16), 1).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), x)
        torch.nn.init.normal_(net.tail.weight, std=0.01)
        together = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 3, 40, 40))


def test_a_face_unet_file_loads_through_the_store_and_restorer(tmp_path):
    torch.manual_seed(0)
    net = FaceUNet((8, 16, 16, 16), 1)
    torch.nn.init.normal_(net.tail.weight, std=0.01)
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    descriptor = load_image_model(ModelStore().user_file(path, "face_restorer"))
    assert descriptor.architecture.id == "VidrestoreFaceUNet"
    restorer = FaceRestorer(descriptor, torch.device("cpu"))
    faces = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(restorer(faces), net(faces).clamp(0, 1), atol=1e-6)


def test_model_init_by_name_or_file_loads_through_the_factory(tmp_path):
    bundled = build_model(config_from_dict({"model": {"init": "vidrestore-face-v1"}}))[0]
    assert isinstance(bundled, FaceUNet) and bundled.training
    assert all(p.requires_grad for p in bundled.parameters())
    torch.manual_seed(1)
    net = FaceUNet((8, 16, 16, 16), 1)
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    mine = build_model(config_from_dict({"model": {"init": str(path)}}))[0]
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                 net.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="realesrgan-x4plus is a background upscaler"):
        build_model(config_from_dict({"model": {"init": "realesrgan-x4plus"}}))


@pytest.mark.parametrize("name", ["vidrestore-face-v2", "vidrestore-face-v1"])
def test_the_bundled_restorer_loads_offline_and_changes_a_face(tmp_path, media, name):
    from vidrestore.config import ModelsConfig

    store = ModelStore(ModelsConfig(dir=str(tmp_path), download=False))
    resolved = store.locate(name)
    assert resolved.source == "bundled:vidrestore"
    assert resolved.path.with_suffix(".md").is_file()  # the model card ships beside it
    descriptor = load_image_model(resolved)
    restorer = FaceRestorer(descriptor, torch.device("cpu"))
    import cv2

    face = cv2.cvtColor(cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Adele_crop.png")),
                        cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = restorer(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 1e-3  # it restores, it does not pass through
    assert REGISTRY[name].size_bytes == resolved.path.stat().st_size


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = load_train_config(None, {"optim": {"steps": 100, "warmup": 10, "lr": 1e-3,
                                             "min_lr": 1e-5}})
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert learning_rate(cfg, 100) == pytest.approx(1e-5)


def test_ema_moves_toward_the_weights():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = b.weight.detach().clone()
    update_ema(b, a, 0.5, step=1000)
    assert torch.allclose(b.weight, (before + a.weight) / 2)


def test_training_config_refuses_unknown_keys_with_their_path(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("optim:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="optim.stepz"):
        load_train_config(path)
    assert isinstance(load_train_config(), TrainConfig)


def test_the_video_preset_leaves_some_faces_clean_and_degrades_some_lightly():
    degrader = Degrader(get_preset("video"), seed=0)
    recipes = [degrader.recipe(i) for i in range(400)]
    clean = sum(r == [] for r in recipes) / 400
    assert 0.03 < clean < 0.15
    image = _face()
    untouched = next(i for i, r in enumerate(recipes) if r == [])
    assert np.array_equal(degrader(image, untouched), image)
    blurs = [p["sigma"] for r in recipes for n, p in r if n == "blur"]
    low, high = PRESETS["video"].ranges["blur.sigma"]
    assert min(blurs) < low + (high - low) / 4 and max(blurs) > high - (high - low) / 4


@pytest.mark.parametrize("bounds", [(0.85, 1.15), (0.75, 0.8), (1.1, 1.3)])
def test_light_casts_stay_inside_their_range(bounds):
    preset = get_preset("video", {"prob": {"clean": 0.0, "light": 1.0, "cast": 1.0},
                                  "ranges": {"cast.gain": bounds}})
    for i in range(20):
        cast = dict(Degrader(preset, 0).recipe(i))["cast"]
        assert all(bounds[0] <= cast[c] <= bounds[1] for c in "rgb")


def test_validation_faces_are_all_degraded(tmp_path):
    from vidrestore.train.data import Batch, validation_batch

    class Crops:
        def __len__(self):
            return 40

        def image(self, i):
            return _face()

        def chip_affine(self, i):
            return np.eye(2, 3, dtype=np.float32)

        def source_scale(self, i):
            return 1.0

    batch = validation_batch(Crops(), Degrader(get_preset("video"), 0), 40, 0)
    assert isinstance(batch, Batch)
    diffs = (batch.degraded - batch.clean).abs().flatten(1).amax(1)
    assert bool((diffs > 0).all())


class _Clip:
    """Crops of two tracks of one clip and a photo, as a manifest lists them."""

    def __init__(self):
        self.records = [
            {"source": "a.mp4", "track": 0, "frame": 0}, {"source": "a.mp4", "track": 1,
                                                           "frame": 0},
            {"source": "a.mp4", "track": 0, "frame": 2}, {"source": "a.mp4", "track": 0,
                                                           "frame": 9},
            {"source": "a.mp4", "track": 1, "frame": 3}, {"source": "b.jpg", "track": 0,
                                                           "frame": 0}]
        rng = np.random.default_rng(1)
        self.images = [np.clip(_face().repeat(4, 0).repeat(4, 1)[:512, :512].astype(int)
                               + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
                       for _ in self.records]

    def __len__(self):
        return len(self.records)

    def image(self, i):
        return self.images[i]

    def source_scale(self, i):
        return 1.0


def test_a_frame_recipe_reaches_the_crop_at_the_faces_source_scale():
    """A face twice as large in its crop as in its frame: blur and motion blur twice as
    long, the downscale twice as deep; a recipe without a downscale still takes the face
    down to its source size before the noise and the codec; a face larger in its source
    than in the crop gets smaller blurs and no enlarging."""
    from vidrestore.train.degradation import at_source_scale

    recipe = [("blur", {"sigma": 1.5}), ("motion", {"length": 4.0, "angle": 30.0}),
              ("downscale", {"factor": 1.5, "method": "area"}), ("noise", {"sigma": 3.0})]
    assert at_source_scale(recipe, 2.0) == [
        ("blur", {"sigma": 3.0}), ("motion", {"length": 8.0, "angle": 30.0}),
        ("downscale", {"factor": 3.0, "method": "area"}), ("noise", {"sigma": 3.0})]
    assert at_source_scale([("blur", {"sigma": 1.0}), ("codec", {"crf": 30})], 2.0) == [
        ("blur", {"sigma": 2.0}), ("downscale", {"factor": 2.0, "method": "area"}),
        ("codec", {"crf": 30})]
    assert at_source_scale(recipe, 0.5)[2] == ("downscale", {"factor": 1.0, "method": "area"})
    assert at_source_scale([("noise", {"sigma": 2.0})], 0.5) == [("noise", {"sigma": 2.0})]
    assert at_source_scale([], 3.0) == []  # the clean draw stays clean


def test_native_scale_degrades_a_face_small_in_its_source_more():
    only_blur = get_preset("video", {"prob": {"clean": 0.0, "light": 0.0, "blur": 1.0,
                                              "motion": 0.0, "downscale": 0.0, "cast": 0.0,
                                              "noise": 0.0, "jpeg": 0.0, "codec": 0.0}})
    face = _face().repeat(4, 0).repeat(4, 1)[:512, :512]

    def detail(image):
        return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())

    native, plain = Degrader(only_blur, 3, native_scale=True), Degrader(only_blur, 3)
    assert detail(native(face, 1, scale=2.5)) < 0.8 * detail(native(face, 1, scale=1.0))
    assert np.array_equal(plain(face, 1, scale=2.5), plain(face, 1))  # off: scale unused


def test_a_faces_source_scale_comes_from_its_eye_distance():
    from vidrestore.train.data import CROP_EYE_PX, FaceCrops

    crops = FaceCrops.__new__(FaceCrops)
    crops.records = [{"eye_px": 63.0}, {"eye_px": CROP_EYE_PX}, {}]
    assert [round(crops.source_scale(i), 3) for i in range(3)] == [
        round(CROP_EYE_PX / 63.0, 3), 1.0, 1.0]
    assert 125 < CROP_EYE_PX < 127  # the FFHQ template's eye distance at 512 px


def test_neighbours_pair_consecutive_faces_of_one_track_within_the_gap():
    from vidrestore.train.data import FaceCrops

    clip = _Clip()
    assert FaceCrops.neighbours(clip, 4) == [(0, 2), (1, 4)]  # 2 -> 9 is too far apart
    assert FaceCrops.neighbours(clip, 7) == [(0, 2), (2, 3), (1, 4)]


def test_pairs_share_recipe_flip_and_patch_but_not_noise():
    from vidrestore.train.data import FaceCrops, PairSampler

    clip = _Clip()
    clip.neighbours = lambda gap: FaceCrops.neighbours(clip, gap)
    only_noise = get_preset("video", {"prob": {"clean": 0.0, "light": 0.0, "blur": 0.0,
                                               "motion": 0.0, "downscale": 0.0, "cast": 0.0,
                                               "noise": 1.0, "jpeg": 0.0, "codec": 0.0},
                                      "ranges": {"noise.sigma": [6.0, 6.0]}})
    sampler = PairSampler(clip, Degrader(only_noise, 0), seed=2, batch=3, patch=64, max_gap=4)
    pair = sampler(5)
    assert pair.clean0.shape == pair.degraded1.shape == (3, 3, 64, 64)
    # noise of sigma 6 on each frame, drawn apart: the two frames' noise differs
    noise0, noise1 = pair.degraded0 - pair.clean0, pair.degraded1 - pair.clean1
    assert 4 / 255 < float(noise0.std()) < 8 / 255
    assert float((noise0 - noise1).abs().mean()) > 2 / 255
    again = sampler(5)
    assert torch.equal(again.degraded0, pair.degraded0)  # a function of (seed, step)
    # one recipe for both frames: the same face twice, blurred by a sigma drawn per pair
    # from a wide range, comes out the same in both frames of every pair
    clip.images = [clip.images[0]] * len(clip.images)
    only_blur = get_preset("video", {"prob": {"clean": 0.0, "light": 0.0, "blur": 1.0,
                                              "motion": 0.0, "downscale": 0.0, "cast": 0.0,
                                              "noise": 0.0, "jpeg": 0.0, "codec": 0.0},
                                     "ranges": {"blur.sigma": [0.5, 6.0]}})
    pair = PairSampler(clip, Degrader(only_blur, 0), seed=2, batch=6, patch=0, max_gap=4)(1)
    assert torch.equal(pair.degraded0, pair.degraded1)
    sharpness = (pair.degraded0[:, :, :, 1:] - pair.degraded0[:, :, :, :-1]).abs().mean((1, 2, 3))
    assert float(sharpness.max() - sharpness.min()) > 1e-3  # the pairs' sigmas differ


def test_temporal_loss_is_zero_for_a_steady_error_and_grows_with_flicker():
    from vidrestore.train.losses import temporal_loss

    clean0, clean1 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    steady = torch.full_like(clean0, 0.05)
    assert float(temporal_loss(clean0 + steady, clean1 + steady, clean0, clean1)) < 1e-7
    flicker = torch.randn_like(clean0) * 0.05
    assert float(temporal_loss(clean0 + flicker, clean1 - flicker, clean0, clean1)) > 0.05


def test_colour_loss_ignores_detail_and_sees_a_colour_shift():
    from vidrestore.train.losses import colour_loss

    torch.manual_seed(0)
    clean = torch.rand(2, 3, 64, 64)
    # detail that averages out in each 16 px cell: a +-0.1 checkerboard
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float() * 0.2 - 0.1
    assert float(colour_loss(clean + checker, clean)) < 1e-6
    shifted = clean + torch.tensor([0.0, 4 / 255, -4 / 255]).view(1, 3, 1, 1)
    assert abs(float(colour_loss(shifted, clean)) - (8 / 255) / 3) < 1e-6
