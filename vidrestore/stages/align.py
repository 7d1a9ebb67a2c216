"""Face alignment and paste-back, batched on the device.

Three steps, each one call for the whole batch:

1. `similarity_transforms`: least-squares similarity (rotation, uniform scale, translation;
   never a reflection) from each face's 5 landmarks to the FFHQ template of GFPGAN/facexlib.
2. `warp_faces`: all aligned crops of a batch with one `grid_sample`, bilinear, outside the
   frame filled with facexlib's grey, so the crops match `cv2.warpAffine(frame, affine,
   (size, size), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT,
   borderValue=(135, 133, 132))` as facexlib's `align_warp_face` makes them.
3. `paste_faces`: each face warped back into its bounding region of the (upscaled) output
   only, blended through a feathered mask that lives in face space (see `feather_mask`).

Pixel conventions. Affines map pixel coordinates with integer values at pixel centres
(OpenCV's convention). `grid_sample(align_corners=False)` puts -1 and +1 at the outer edges of
the border pixels, so pixel x of a side of n pixels is (2x + 1)/n - 1 there. Upscaling by s
maps input pixel x to output pixel s*x + (s - 1)/2 (centres of the s x s block line up), which
is what bicubic `F.interpolate(align_corners=False)` does. facexlib 0.3.0
(`get_inverse_affine`, `paste_faces_to_input_image`) multiplies the whole inverse affine by s,
which maps input pixel x to s*x, then, when s > 1, adds 0.5*s to its translation: input pixel
x lands at s*x + s/2, half an output pixel right of and below s*x + (s - 1)/2 (no shift at
s = 1). It warps the face bilinearly. Here there is no such shift and the paste is bicubic
(tests/peer/test_equivalence.py measures both). The small 3x3 matrix algebra runs in float64
(a few numbers per face); grids and pixels stay float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..face_geometry import FFHQ_TEMPLATE_512, face_template, similarity_transforms

__all__ = ["FFHQ_TEMPLATE_512", "face_template", "feather_mask", "invert_affines",
           "paste_faces", "similarity_transforms", "warp_faces"]

# facexlib fills crop pixels outside the frame with BGR (135, 133, 132): this is it in RGB.
FACEXLIB_GREY = (132 / 255, 133 / 255, 135 / 255)


def invert_affines(affines: torch.Tensor) -> torch.Tensor:
    """(K, 2, 3) affines -> (K, 2, 3) inverses (same dtype and device), computed in float64.

    Closed form, [L | t]^-1 = [L^-1 | -L^-1 t] with the 2x2 adjugate: exact up to rounding
    and, on the CPU, far cheaper than a batched LAPACK call for a handful of tiny matrices.
    """
    m = affines.double()
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    inv = adjugate / det[:, None, None]
    shift = -(inv @ m[:, :, 2:])
    return torch.cat([inv, shift], -1).to(affines.dtype)


def warp_faces(frames: torch.Tensor, frame_index: torch.Tensor, affines: torch.Tensor,
               size: int = 512, fill: tuple[float, float, float] = FACEXLIB_GREY,
               mode: str = "bilinear") -> torch.Tensor:
    """Aligned face crops for all faces of a batch in one `grid_sample`.

    frames: (N, 3, H, W) float RGB in [0, 1] on the working device.
    frame_index: (K,) int64, the frame each face belongs to (any order, repeats allowed).
    affines: (K, 2, 3) frame pixels -> crop pixels (from `similarity_transforms`).
    fill: RGB in [0, 1] for crop pixels outside the frame (facexlib's grey by default).
    mode: "bilinear" matches facexlib (cv2.INTER_LINEAR); "bicubic" is sharper, may
        overshoot [0, 1] slightly, and replicates the frame's edge under its outer taps.
    Returns (K, 3, size, size) float32 on frames' device; K = 0 gives an empty tensor.

    The frames are never copied per face: faces are laid out as (frame, slot), slot being
    the rank of the face within its frame, and frame n samples the grids of all its slots
    in the same call. A frame with fewer faces than the busiest one samples empty slots far
    outside itself: crop-sized waste, where indexing frames per face would copy whole frames.
    """
    n, _, height, width = frames.shape
    k = frame_index.shape[0]
    if k == 0:
        return frames.new_empty((0, 3, size, size))
    slot, slots = _slots(frame_index, n)
    place = frame_index * slots + slot  # each face's row in the (frame, slot) layout
    theta = _crop_to_frame_theta(affines, height, width, size).to(frames.dtype)
    padded = theta.new_tensor([[0, 0, 4], [0, 0, 4]]).repeat(n * slots, 1, 1)
    padded[place] = theta  # empty slots look at 4: no neighbour inside [-1, 1]
    grid = _affine_grid(padded, size, size)
    # bicubic's outer taps must not see zeros next to a frame edge it never crosses
    padding = "zeros" if mode == "bilinear" else "border"
    crops = F.grid_sample(frames, grid.view(n, slots * size, size, 2), mode=mode,
                          padding_mode=padding, align_corners=False)
    crops = crops.view(n, 3, slots, size, size).transpose(1, 2).flatten(0, 1)[place]
    if not _reaches_outside(grid[place[:, None], [[0, 0, -1, -1]], [[0, -1, 0, -1]]],
                            height, width):
        return crops  # the common case: every crop lies inside its frame, nothing to fill
    colour = torch.tensor(fill, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    outside = 1 - _inside_weight(grid[place], height, width)
    if padding == "zeros":
        return crops + colour * outside  # exactly OpenCV's constant border
    return crops.lerp(colour, outside)


def _reaches_outside(corners: torch.Tensor, height: int, width: int) -> bool:
    """Whether any crop samples beyond the centres of the frame's border pixels.

    corners: (K, 4, 2) normalised x, y of the corner pixels of each crop's grid; the grid is
    affine, so they bound it."""
    size = torch.tensor([width, height], dtype=corners.dtype, device=corners.device)
    pixels = ((corners + 1) * size - 1) / 2
    return bool(((pixels < 0) | (pixels > size - 1)).any())


def _inside_weight(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, 1, S, S): the bilinear weight that falls on frame pixels at each grid point.

    Zero padding leaves out the rest; giving it the fill colour is exactly OpenCV's constant
    border for bilinear sampling, without copying the frames to subtract the fill first.
    Along x the weight is 1 inside [0, W - 1], x + 1 or W - x on the one-pixel margins,
    0 beyond; the same along y; the product in 2-D.
    """
    size = torch.tensor([width, height], dtype=grid.dtype, device=grid.device)
    pixels = grid * (size / 2) + (size - 1) / 2
    weight = torch.minimum(pixels + 1, size - pixels).clamp_(0, 1)
    return (weight[..., 0] * weight[..., 1]).unsqueeze(1)


def feather_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size, size) float32 in [0, 1]: the soft edge of a pasted face, in crop pixels.

    facexlib erodes the warped crop square by w = sqrt(face area)/20 output pixels (kernel
    2w), then Gaussian-blurs it (kernel 2w + 1, OpenCV's default sigma 0.3 (w - 1) + 0.8).
    The face area is the crop's, so in crop pixels w is always size/20: the same erosion and
    blur done once here, in face space, separably. Warped with the face, it gives facexlib's
    seam-free edge (0 at the crop border, 1 from about size/10 inward) without any erosion or
    convolution at output resolution, and it rotates with the face.
    """
    edge = size / 20
    erode, sigma = round(edge), 0.3 * (edge - 1) + 0.8
    radius = erode - 1  # one tap short of the crop border, so the mask is exactly 0 there
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    pixels = torch.arange(size)
    inside = ((pixels >= erode) & (pixels < size - erode)).double()
    profile = F.conv1d(inside.view(1, 1, -1), (kernel / kernel.sum()).view(1, 1, -1),
                       padding=radius).view(-1)
    return torch.outer(profile, profile).float().to(device)


def paste_faces(background: torch.Tensor, faces: torch.Tensor, frame_index: torch.Tensor,
                affines: torch.Tensor, scale: int = 1, masks: torch.Tensor | None = None,
                mode: str = "bicubic") -> torch.Tensor:
    """Faces warped back into the frames they came from, feathered, composited in order.

    background: (N, 3, sH, sW) float RGB in [0, 1]: the frames at the output scale.
    faces: (K, 3, S, S) float RGB in [0, 1], crops as made by `warp_faces` (restored or not).
    frame_index: (K,) int64, the frame of each face.
    affines: (K, 2, 3) input-frame pixels -> crop pixels, the ones the crops were warped with.
    scale: output size / input frame size (integer).
    masks: optional (K, 1, S, S) in [0, 1] (e.g. a face-parsing mask), multiplied into the
        feather mask.
    mode: resampling of face and mask. Bicubic by default: an unchanged crop pasted back
        this way reproduces a sharp frame at 42 dB where bilinear gives 38.5 (two bilinear
        passes blur); the result is clamped, so its overshoot never leaves [0, 1].
    Returns a new (N, 3, sH, sW) float tensor on background's device; the input is unchanged.

    Each face is sampled only over the output rectangle its crop square covers, so memory
    grows with the face, not with the frame. The loop over faces only slices; the sampling
    and blending are tensor ops on the device. Later faces are composited over earlier ones.
    """
    _check_paste_inputs(background, faces, frame_index, affines, masks)
    out = background.clone()
    k, _, size, _ = faces.shape
    if k == 0:
        return out
    alpha = feather_mask(size, faces.device).expand(k, 1, size, size).to(faces.dtype)
    if masks is not None:
        alpha = alpha * masks
    layers = torch.cat([faces, alpha], 1)  # face and its alpha go through one sampling
    regions = _paste_regions(frame_index, affines, scale, size, out.shape[-2:])
    theta = _region_to_crop_theta(affines, scale, size, regions).to(faces.dtype)
    for face, (frame, top, left, bottom, right) in enumerate(regions.tolist()):
        if bottom <= top or right <= left:
            continue  # the crop lies wholly outside the frame
        target = out[frame, :, top:bottom, left:right]  # a view: blending writes into out
        grid = _affine_grid(theta[face:face + 1], bottom - top, right - left)
        warped = F.grid_sample(layers[face:face + 1], grid, mode=mode,
                               padding_mode="zeros", align_corners=False)[0].clamp_(0, 1)
        target.lerp_(warped[:3], warped[3:])
    return out


def _check_paste_inputs(background: torch.Tensor, faces: torch.Tensor,
                        frame_index: torch.Tensor, affines: torch.Tensor,
                        masks: torch.Tensor | None) -> None:
    k = faces.shape[0]
    if background.ndim != 4 or background.shape[1] != 3:
        raise ValueError(f"background must be (N, 3, sH, sW), got {tuple(background.shape)}")
    if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[2] != faces.shape[3]:
        raise ValueError(f"faces must be (K, 3, S, S), got {tuple(faces.shape)}")
    if frame_index.shape != (k,) or affines.shape != (k, 2, 3):
        raise ValueError(f"{k} faces need frame_index ({k},) and affines ({k}, 2, 3), got "
                         f"{tuple(frame_index.shape)} and {tuple(affines.shape)}")
    if masks is not None and masks.shape != (k, 1, *faces.shape[2:]):
        raise ValueError(f"masks must be {(k, 1, *faces.shape[2:])}, got {tuple(masks.shape)}")


def _affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`F.affine_grid(theta, (K, C, height, width), align_corners=False)`, (K, H, W, 2).

    The map is affine, so the grid is a row term plus a column term: two small products
    and one broadcast add instead of affine_grid's (K, H*W, 3) @ (K, 3, 2) product.
    """
    options = {"dtype": theta.dtype, "device": theta.device}
    u = (torch.arange(width, **options) * 2 + 1) / width - 1  # pixel centres, normalised
    v = (torch.arange(height, **options) * 2 + 1) / height - 1
    cols = u[None, :, None] * theta[:, None, :, 0]  # (K, W, 2)
    rows = v[None, :, None] * theta[:, None, :, 1] + theta[:, None, :, 2]  # (K, H, 2)
    return rows[:, :, None, :] + cols[:, None, :, :]


def _paste_regions(frame_index: torch.Tensor, affines: torch.Tensor, scale: int, size: int,
                   out_size: torch.Size) -> torch.Tensor:
    """(K, 5) int64 frame, top, left, bottom, right (exclusive) of each crop square's bounding
    box in output pixels, clipped to the output; empty when the crop misses the frame."""
    to_out = _upscale_matrix(scale, affines.device) @ _to_3x3(invert_affines(affines.double()))
    edges = torch.tensor([-0.5, size - 0.5], dtype=torch.float64, device=affines.device)
    corners = torch.cartesian_prod(edges, edges)  # outer edges of the crop's corner pixels
    points = corners @ to_out[:, :2, :2].transpose(1, 2) + to_out[:, None, :2, 2]  # (K, 4, 2)
    low = (points.amin(1) + 0.5).floor().long()  # first pixel whose centre may see the crop
    high = (points.amax(1) + 0.5).ceil().long()
    limit = torch.tensor([out_size[1], out_size[0]], device=affines.device)
    low = low.clamp(min=0).minimum(limit)
    high = high.minimum(limit).maximum(low)  # high == low: nothing to paste
    return torch.stack([frame_index, low[:, 1], low[:, 0], high[:, 1], high[:, 0]], 1)


def _region_to_crop_theta(affines: torch.Tensor, scale: int, size: int,
                          regions: torch.Tensor) -> torch.Tensor:
    """(K, 2, 3) float64 for `affine_grid`: normalised region coordinates -> normalised crop
    coordinates, i.e. crop-normalise . affine . output-to-input . region-offset . region-pixel.
    `regions` has a frame column first (see `_paste_regions`)."""
    top, left, bottom, right = regions[:, 1:].double().unbind(1)
    width, height = (right - left).clamp_min(1), (bottom - top).clamp_min(1)
    offset = _translation(left, top)
    chain = (_to_normalised(torch.full_like(width, size), torch.full_like(width, size))
             @ _to_3x3(affines.double()) @ _downscale_matrix(scale, affines.device)
             @ offset @ _from_normalised(width, height))
    return _to_2x3(chain)


def _crop_to_frame_theta(affines: torch.Tensor, height: int, width: int,
                         size: int) -> torch.Tensor:
    """(K, 2, 3) float64 for `affine_grid`: normalised crop coordinates -> normalised frame
    coordinates, i.e. frame-normalise . inverse affine . crop-pixel."""
    k = affines.shape[0]
    ones = torch.ones(k, dtype=torch.float64, device=affines.device)
    chain = (_to_normalised(ones * width, ones * height)
             @ _to_3x3(invert_affines(affines.double()))
             @ _from_normalised(ones * size, ones * size))
    return _to_2x3(chain)


def _slots(frame_index: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
    """Rank of each face among the faces of its frame, and the largest count per frame."""
    onehot = F.one_hot(frame_index, frames)  # (K, N)
    slot = (onehot.cumsum(0) * onehot).sum(1) - 1
    return slot, int(onehot.sum(0).max())


def _to_normalised(width: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    """(K, 3, 3): pixel x -> (2x + 1)/n - 1, grid_sample's align_corners=False coordinates."""
    zero = torch.zeros_like(width)
    return _matrix(2 / width, zero, 1 / width - 1, zero, 2 / height, 1 / height - 1)


def _from_normalised(width: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    """(K, 3, 3): the inverse of `_to_normalised`, u -> (n u + n - 1)/2."""
    zero = torch.zeros_like(width)
    return _matrix(width / 2, zero, (width - 1) / 2, zero, height / 2, (height - 1) / 2)


def _translation(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    return _matrix(one, zero, dx, zero, one, dy)


def _upscale_matrix(scale: int, device: torch.device) -> torch.Tensor:
    """(3, 3) float64: input pixel x -> output pixel s x + (s - 1)/2 (block centres align)."""
    shift = (scale - 1) / 2
    return torch.tensor([[scale, 0, shift], [0, scale, shift], [0, 0, 1]],
                        dtype=torch.float64, device=device)


def _downscale_matrix(scale: int, device: torch.device) -> torch.Tensor:
    """(3, 3) float64: the inverse of `_upscale_matrix`, output pixel p -> (p - (s - 1)/2)/s."""
    shift = -(scale - 1) / (2 * scale)
    return torch.tensor([[1 / scale, 0, shift], [0, 1 / scale, shift], [0, 0, 1]],
                        dtype=torch.float64, device=device)


def _matrix(a, b, c, d, e, f) -> torch.Tensor:
    """(K, 3, 3) from the six (K,) entries of the top two rows; last row 0, 0, 1."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], -1).view(-1, 3, 3)


def _to_3x3(affines: torch.Tensor) -> torch.Tensor:
    last = affines.new_tensor([0, 0, 1]).expand(affines.shape[0], 1, 3)
    return torch.cat([affines, last], 1)


def _to_2x3(matrices: torch.Tensor) -> torch.Tensor:
    return matrices[:, :2, :].contiguous()


__all__ = ["FACEXLIB_GREY", "FFHQ_TEMPLATE_512", "face_template", "feather_mask",
           "invert_affines", "paste_faces", "similarity_transforms", "warp_faces"]
