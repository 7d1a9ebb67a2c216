"""Colour consistency on a synthetic face sequence: input jitter, a restorer's colour shifts."""

from __future__ import annotations

import cv2
import pytest
import torch
import torch.nn.functional as F

from vidrestore.stages.colour import ColourConsistency

SIZE = 128  # the colour stage is size-agnostic; small crops keep the tests fast
FRAMES = 60


@pytest.fixture(scope="module")
def face(media) -> torch.Tensor:
    """Adele's aligned face, (1, 3, SIZE, SIZE) float32 RGB in [0, 1]."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Adele_crop.png"))
    rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(rgb, size=SIZE, mode="area")


@pytest.fixture(scope="module")
def mask() -> torch.Tensor:
    """A soft-edged ellipse over the face of an FFHQ-aligned crop, (1, 1, SIZE, SIZE)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE),
                            indexing="ij")
    radius = (xx / 0.6).square() + ((yy - 0.05) / 0.75).square()
    return (1.5 - radius).clamp(0, 0.5)[None, None] * 2


def _sequence(face: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, restored), each (FRAMES, 3, SIZE, SIZE).

    Inputs: the face with a random +-3% gain per channel and frame. "Restorer": each input
    with its own random +-8% gain and +-0.03 offset per channel and call.
    """
    g = torch.Generator().manual_seed(seed)
    jitter = 1 + (torch.rand(FRAMES, 3, 1, 1, generator=g) * 2 - 1) * 0.03
    inputs = (face * jitter).clamp(0, 1)
    gain = 1 + (torch.rand(FRAMES, 3, 1, 1, generator=g) * 2 - 1) * 0.08
    offset = (torch.rand(FRAMES, 3, 1, 1, generator=g) * 2 - 1) * 0.03
    return inputs, (inputs * gain + offset).clamp(0, 1)


def _mean_colour(faces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, 3) mask-weighted mean RGB in 8-bit steps."""
    return (faces * mask).sum(dim=(2, 3)) / mask.sum() * 255


def _flicker(faces: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean frame-to-frame change of the mean face colour, in 8-bit steps."""
    colour = _mean_colour(faces, mask)
    return (colour[1:] - colour[:-1]).abs().mean().item()


def _run_in_batches(cc: ColourConsistency, restored, inputs, mask, per_call: int):
    """One track, `per_call` consecutive frames per call (as the pipeline batches frames)."""
    out = []
    for start in range(0, len(inputs), per_call):
        r, i = restored[start:start + per_call], inputs[start:start + per_call]
        out.append(cc([0] * len(r), r, i, mask.expand(len(r), -1, -1, -1)))
    return torch.cat(out)


def test_flicker_is_no_larger_than_the_inputs_and_colour_stays_the_inputs(face, mask):
    inputs, restored = _sequence(face)
    out = _run_in_batches(ColourConsistency(), restored, inputs, mask, per_call=6)
    flicker_in, flicker_restored = _flicker(inputs, mask), _flicker(restored, mask)
    flicker_out = _flicker(out, mask)
    assert flicker_restored > 2 * flicker_in  # the restorer's shifts are the worst flicker
    assert flicker_out <= flicker_in / 2  # measured: input 3.1, restored 10.2, output 0.6
    error = _mean_colour(out, mask) - _mean_colour(inputs, mask)
    # On average over the sequence the output has the input's colour (measured 0.15/255).
    # Frame by frame it sits at the smoothed colour, off by about the input's own jitter.
    assert error.mean(dim=0).abs().max() < 1.0
    assert error.abs().mean() < 2.5  # measured 1.8; the input jitters by up to 3% of ~130


def test_without_history_each_face_gets_exactly_its_inputs_colour(face, mask):
    inputs, restored = _sequence(face, seed=1)
    out = _run_in_batches(ColourConsistency(history_frames=1), restored, inputs, mask, 6)
    error = _mean_colour(out, mask) - _mean_colour(inputs, mask)
    assert error.abs().max() < 0.1
    assert abs(_flicker(out, mask) - _flicker(inputs, mask)) < 0.05


def test_several_frames_of_several_tracks_in_one_call_equal_one_face_per_call(face, mask):
    inputs, restored = _sequence(face, seed=2)
    tracks = [3, 5, 3, 3, 5, 9, 5, 3]  # frame order within each track
    k = len(tracks)
    masks = mask.expand(k, -1, -1, -1)
    together = ColourConsistency()(tracks, restored[:k], inputs[:k], masks)
    one_by_one = ColourConsistency()
    apart = torch.cat([one_by_one([t], restored[i:i + 1], inputs[i:i + 1], mask)
                       for i, t in enumerate(tracks)])
    torch.testing.assert_close(together, apart, atol=1e-6, rtol=0)


def test_a_reset_track_starts_afresh(face, mask):
    before = (face * 0.94).clamp(0, 1)  # a little darker: within the jump threshold
    shifted = (face * 1.15).clamp(0, 1)  # the "restorer" brightens

    def feed(cc: ColourConsistency, inputs: torch.Tensor) -> torch.Tensor:
        return cc([7], shifted, inputs, mask)

    kept, reset = ColourConsistency(), ColourConsistency()
    for cc in (kept, reset):
        for _ in range(10):
            feed(cc, before)
    reset.reset(7)
    target = _mean_colour(face, mask)
    assert (_mean_colour(feed(reset, face), mask) - target).abs().max() < 0.1
    bled = _mean_colour(feed(kept, face), mask) - target
    assert bled.max() < -3  # the old, darker history pulls a continuing track down


def test_tracks_in_one_call_keep_their_own_colours(face, mask):
    dark, light = face * 0.7, face * 0.95  # no clipping: the means can match exactly
    cc = ColourConsistency()
    for _ in range(5):  # interleaved: 1, 2, 1, 2 in every call
        inputs = torch.cat([dark, light, dark, light])
        out = cc([1, 2, 1, 2], torch.cat([face] * 4), inputs, mask.expand(4, -1, -1, -1))
    error = _mean_colour(out, mask) - _mean_colour(inputs, mask)
    assert error.abs().max() < 0.1
    assert cc.tracks == {1, 2}
    cc.end([1, 2, 99])
    assert cc.tracks == frozenset()


def test_a_large_change_of_light_is_followed_at_once(face, mask):
    cc = ColourConsistency(history_frames=8)
    for _ in range(10):
        cc([0], face, face, mask)
    darker = face * 0.6  # lights down: Y drops by about 0.2
    out = cc([0], face, darker, mask)
    assert (_mean_colour(out, mask) - _mean_colour(darker, mask)).abs().max() < 0.1


def test_a_grey_input_gives_a_grey_face(face, mask):
    grey = face.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    tinted = (grey * torch.tensor([1.1, 1.0, 0.85]).view(1, 3, 1, 1)).clamp(0, 1)
    out = ColourConsistency()([0], tinted, grey, mask)
    spread = (out.amax(dim=1) - out.amin(dim=1)) * mask[0]  # R, G, B apart inside the face
    assert spread.max() < 1 / 255


def test_no_mask_measures_the_whole_crop(face):
    inputs, restored = _sequence(face, seed=3)
    out = ColourConsistency(history_frames=1)([0, 1], restored[:2], inputs[:2], None)
    whole = torch.ones(1, 1, SIZE, SIZE)
    error = _mean_colour(out, whole) - _mean_colour(inputs[:2], whole)
    assert error.abs().max() < 0.5  # clamping at 0 and 1 moves the mean a little


def test_zero_strength_or_an_empty_mask_leaves_faces_alone(face, mask):
    inputs, restored = _sequence(face, seed=4)
    out = ColourConsistency(strength=0)([0], restored[:1], inputs[:1], mask)
    assert torch.equal(out, restored[:1])
    cc = ColourConsistency()
    empty = torch.zeros_like(mask)
    assert torch.equal(cc([4], restored[:1], inputs[:1], empty), restored[:1])
    assert cc.tracks == frozenset()  # no statistics, no history
    assert cc([], restored[:0], inputs[:0], None).shape == (0, 3, SIZE, SIZE)


def test_inputs_are_not_changed(face, mask):
    inputs, restored = _sequence(face, seed=5)
    before = (inputs.clone(), restored.clone())
    ColourConsistency()([0] * 4, restored[:4], inputs[:4], mask.expand(4, -1, -1, -1))
    assert torch.equal(inputs, before[0]) and torch.equal(restored, before[1])


@pytest.mark.parametrize("bad", ["ids", "inputs", "masks"])
def test_mismatched_shapes_are_refused(bad):
    faces = torch.rand(2, 3, 16, 16)
    args = {"ids": [0, 1], "inputs": faces, "masks": torch.ones(2, 1, 16, 16)}
    args[bad] = {"ids": [0], "inputs": faces[:, :, :8], "masks": torch.ones(2, 1, 8, 8)}[bad]
    with pytest.raises(ValueError):
        ColourConsistency()(args["ids"], faces, args["inputs"], args["masks"])


@pytest.mark.needs_cuda
def test_cuda_matches_cpu(face, mask):
    inputs, restored = _sequence(face, seed=6)
    masks = mask.expand(FRAMES, -1, -1, -1)
    tracks = [i % 3 for i in range(FRAMES)]
    cpu = ColourConsistency()(tracks, restored, inputs, masks)
    cuda = ColourConsistency()(tracks, restored.cuda(), inputs.cuda(), masks.cuda())
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)


def test_a_restorer_scaling_r_g_and_b_differently_is_undone_pixel_by_pixel(face, mask):
    """In YCbCr a per-RGB-channel gain is a full 3x3 map: matching means and covariances
    undoes it over the whole face, so any part of the face (here the cheeks and nose) gets
    its input colour back, not only the mask's average."""
    inputs = face * 0.8 + 0.05  # no clipping below
    gain, offset = torch.tensor([1.08, 0.95, 0.92]), torch.tensor([-0.02, 0.03, 0.01])
    restored = inputs * gain.view(1, 3, 1, 1) + offset.view(1, 3, 1, 1)
    out = ColourConsistency(history_frames=1)([0], restored, inputs, mask)
    inside = mask[0, 0] > 0.5
    error = (out - inputs)[0][:, inside].abs() * 255
    assert error.max() < 0.1  # measured 0.006 (8-bit steps); per-channel matching in YCbCr: 6.4
    cheeks = torch.zeros_like(mask)
    cheeks[..., SIZE * 5 // 10:SIZE * 7 // 10, SIZE * 4 // 10:SIZE * 6 // 10] = 1
    region_error = _mean_colour(out, cheeks) - _mean_colour(inputs, cheeks)
    assert region_error.abs().max() < 0.05


def test_detail_a_restorer_adds_is_kept_while_its_cast_is_undone(media):
    """Input: Adele's 512 px face blurred (sigma 6, what a restorer is given); restored: the
    sharp face with a cast. The match takes the cast back out and keeps the detail:
    statistics of the faces' low frequencies, so the blurred input's smaller spread does
    not scale the restored face's contrast down to the blur's. (Matched on full-resolution
    statistics, the same face came back at 35.8 dB with 92 % of its detail.)"""
    bgr = cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Adele_crop.png"))
    sharp = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    blurred = torch.from_numpy(cv2.GaussianBlur(sharp[0].permute(1, 2, 0).numpy(), (0, 0), 6)
                               ).permute(2, 0, 1)[None]
    restored = (sharp * torch.tensor([1.08, 0.95, 0.9]).view(1, 3, 1, 1)).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 512), torch.linspace(-1, 1, 512),
                            indexing="ij")
    face_mask = ((1.5 - (xx / 0.6).square() - ((yy - 0.05) / 0.75).square())
                 .clamp(0, 0.5) * 2)[None, None]
    matched = ColourConsistency()([0], restored, blurred, face_mask)

    def detail(x):  # high-pass energy inside the mask
        low = F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)
        return float(((x - low) * face_mask).abs().mean())

    assert detail(matched) > 0.95 * detail(sharp)
    assert float(10 * torch.log10(1 / (matched - sharp).square().mean())) > 40
    shift = (_mean_colour(matched, face_mask) - _mean_colour(sharp, face_mask)).abs()
    assert float(shift.max()) < 1  # the cast is gone (8-bit steps)
