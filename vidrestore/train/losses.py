"""Losses of `vidrestore train`: reconstruction (L1/L2), identity, temporal, optional LPIPS.

Identity: dlib's ResNet face descriptor re-implemented in torch (`models/arch/dlib_resnet`),
weights from the `.dat` of face-recognition-models (loaded by the model factory, role
`identity_net`), equal to dlib's own output (see tests/unit/test_dlib_resnet.py). It is
the one identity network with real weights that needs no download (ArcFace's buffalo_l is
a download, and only as ONNX, which is not differentiable here). Each face is warped to
its 150 px dlib chip with the crop -> chip affine stored in the dataset manifest
(bilinear, differentiable), and the loss is 1 - cosine(descriptor(restored),
descriptor(clean)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.arch.dlib_resnet import CHIP_SIZE


def reconstruction(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


def temporal_loss(out0: torch.Tensor, out1: torch.Tensor, clean0: torch.Tensor,
                  clean1: torch.Tensor) -> torch.Tensor:
    """L1 of the change between the two restored frames minus the clean frames' change:
    zero when the restorer's error is the same on both frames, so detail it invents
    must stay put from frame to frame instead of flickering."""
    return (out1 - out0 - (clean1 - clean0)).abs().mean()



def colour_loss(output: torch.Tensor, target: torch.Tensor, cell: int = 16) -> torch.Tensor:
    """L1 of the local mean colours (`cell` px cells): zero for any change of detail, large
    for a shift of colour or brightness. A restorer trained on L1 alone drifts by a few
    8-bit levels over a whole crop (measured on vidrestore-face-v1: 1-3 levels a channel on
    average), which the colour stage can only partly take back."""
    return F.l1_loss(F.avg_pool2d(output, cell), F.avg_pool2d(target, cell))


def warp_to_chips(faces: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """(K, 3, S, S) crops and (K, 2, 3) crop -> chip affines -> (K, 3, 150, 150) chips."""
    k, _, h, w = faces.shape
    full = torch.cat([affines.to(faces), affines.new_tensor([0, 0, 1]).to(faces)
                      .expand(k, 1, 3)], 1)
    inverse = torch.linalg.inv(full.double()).to(faces.dtype)  # chip pixel -> crop pixel
    # normalised chip coords -> chip pixels -> crop pixels -> normalised crop coords
    to_pixels = faces.new_tensor([[CHIP_SIZE / 2, 0, (CHIP_SIZE - 1) / 2],
                                  [0, CHIP_SIZE / 2, (CHIP_SIZE - 1) / 2], [0, 0, 1]])
    to_norm = faces.new_tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    theta = (to_norm @ inverse @ to_pixels)[:, :2]
    grid = F.affine_grid(theta, (k, 3, CHIP_SIZE, CHIP_SIZE), align_corners=False)
    return F.grid_sample(faces, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


class IdentityLoss(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        """net: the torch dlib ResNet as the model factory loads it (`load_model(store,
        "dlib-resnet-face", "identity_net", device).module`)."""
        super().__init__()
        self.net = net

    def embed(self, faces: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        # faces smaller than the chip's region are anti-aliased by the chip warp alone;
        # crops at 512 shrink about 2.4x, so blur a little first as dlib's pyramid does
        blurred = _box_blur(faces) if faces.shape[-1] >= 2 * CHIP_SIZE else faces
        return F.normalize(self.net(warp_to_chips(blurred, affines)), dim=1)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                affines: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = self.embed(target, affines)
        return (1 - (self.embed(output, affines) * reference).sum(1)).mean()

    def similarity(self, a: torch.Tensor, b: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        """(K,) cosine of the unit descriptors of a and b."""
        with torch.no_grad():
            return (self.embed(a, affines) * self.embed(b, affines)).sum(1)


def _box_blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
