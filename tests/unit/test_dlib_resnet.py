"""dlib's ResNet face descriptor in torch equals dlib's own, on the faces of ../shared/media."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vidrestore.faces_dataset import chip_affine
from vidrestore.metrics.identity import DlibFaceEncoder, LandmarkedFace, open_identity_encoder
from vidrestore.models import ModelStore
from vidrestore.models.arch.dlib_resnet import DlibResNet, read_dlib_resnet
from vidrestore.models.bundled_faces import bundled_retinaface, dlib_model_path
from vidrestore.models.factory import load_model
from vidrestore.stages.detect import FaceDetector
from vidrestore.train.losses import warp_to_chips

PHOTOS = ["images/gfpgan_whole_imgs_00.jpg", "images/codeformer_whole_imgs_00.jpg",
          "images/gfpgan_whole_imgs_Blake_Lively.jpg", "clean/images/liveportrait_s2.jpg",
          "clean/images/liveportrait_s42.jpg", "clean/images/liveportrait_s9.jpg"]


@pytest.fixture(scope="module")
def faces(media) -> list[LandmarkedFace]:
    detector = FaceDetector(bundled_retinaface(), "cpu")
    out = []
    for name in PHOTOS:
        rgb = cv2.cvtColor(cv2.imread(str(media / name)), cv2.COLOR_BGR2RGB)
        found = detector(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
        for k in range(len(found)):
            if float(found.scores[k]) > 0.9:
                out.append(LandmarkedFace(rgb, found.landmarks[k].double().numpy()))
    assert len(out) >= 10
    return out


def dlib_encoder() -> DlibFaceEncoder:
    return open_identity_encoder(ModelStore(), "dlib")


def torch_descriptor() -> DlibResNet:
    """The torch network as the training identity loss gets it: from the model factory."""
    loaded = load_model(ModelStore(), "dlib-resnet-face", "identity_net")
    assert isinstance(loaded.module, DlibResNet) and not loaded.module.training
    return loaded.module


def test_torch_descriptors_equal_dlibs_own(faces):
    encoder = dlib_encoder()
    chips = encoder.chips(faces)
    theirs = np.asarray(encoder.descriptors(faces), np.float64)
    net = torch_descriptor()
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ours = net(batch).double().numpy()
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, cos
    assert np.abs(ours - theirs).max() < 1e-4
    # and different faces stay apart: the comparison is not trivially 1
    assert (ours[0] @ ours[1]) / np.linalg.norm(ours[0]) / np.linalg.norm(ours[1]) < 0.99


def test_the_weights_are_read_in_full_from_the_dat_file():
    state = read_dlib_resnet(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
    convs = [k for k in state if k.endswith(".weight") and state[k].ndim == 4]
    assert len(convs) == 29  # stem + 14 blocks of two
    assert state["fc.weight"].shape == (128, 256)
    assert torch.allclose(state["mean"].flatten(), torch.tensor([122.782, 117.001, 104.298]),
                          atol=1e-3)


def test_the_descriptor_is_differentiable():
    net = torch_descriptor()
    chips = torch.rand(2, 3, 150, 150, requires_grad=True)
    net(chips).square().sum().backward()
    assert chips.grad is not None and chips.grad.abs().sum() > 0


def test_the_crop_to_chip_map_matches_dlibs_chip(faces):
    encoder = dlib_encoder()
    image, marks = faces[3]
    shape = encoder._predictor(image, encoder._box(marks))
    details = encoder._dlib.get_face_chip_details(shape, 150, 0.25)
    affine = chip_affine(details)
    dlib_chip = encoder._dlib.get_face_chip(image, shape, size=150, padding=0.25)
    ours = cv2.warpAffine(image, affine, (150, 150), flags=cv2.INTER_AREA)
    # dlib shrinks through an image pyramid first: the difference is resampling, not place
    assert np.abs(ours.astype(float) - dlib_chip).mean() < 6
    shifted = cv2.warpAffine(image, affine + [[0, 0, 4], [0, 0, 0]], (150, 150))
    assert np.abs(shifted.astype(float) - dlib_chip).mean() > np.abs(
        ours.astype(float) - dlib_chip).mean()
    # the differentiable warp of the training loss gives what OpenCV gives
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    warped = warp_to_chips(tensor, torch.from_numpy(affine).float()[None])[0]
    reference = cv2.warpAffine(image, affine, (150, 150), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    diff = np.abs(warped.permute(1, 2, 0).numpy() * 255 - reference)
    assert diff.mean() < 1.0
