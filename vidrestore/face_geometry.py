"""Where a face's landmarks go: the FFHQ template and the similarity that maps landmarks onto
a template. Plain geometry, used by the aligner (`stages/align.py`) and by the identity
encoders, which align faces to templates of their own (ArcFace's 112 px one)."""

from __future__ import annotations

import torch

# The five FFHQ landmarks (left eye, right eye, nose tip, left and right mouth corner, as seen
# in the image) in a 512 x 512 crop: facexlib's FaceRestoreHelper with template_3points=False,
# which GFPGAN uses.
FFHQ_TEMPLATE_512 = torch.tensor([[192.98138, 239.94708], [318.90277, 240.1936],
                                  [256.63416, 314.01935], [201.26117, 371.41043],
                                  [313.08905, 371.15118]])


def face_template(size: int = 512) -> torch.Tensor:
    """(5, 2) float32 template points for a size x size crop (facexlib scales by size/512)."""
    return FFHQ_TEMPLATE_512 * (size / 512)


def similarity_transforms(landmarks: torch.Tensor,
                          template: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares similarity from frame landmarks to template points, for K faces at once.

    landmarks: (K, P, 2) float x, y in frame pixels, any device (P = 5 for RetinaFace).
    template: (P, 2) points in crop pixels; default `face_template(512)`.
    Returns (K, 2, 3) float32 affines A with template ~ A @ [x, y, 1], on landmarks' device.

    In complex numbers a similarity is z -> c*z + t, and sum |c*a_i - b_i|^2 over centred
    points is minimised by c = sum(conj(a_i) b_i) / sum(|a_i|^2): Umeyama's solution in 2-D,
    closed form, deterministic, never a reflection.

    facexlib 0.3.0 calls cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS),
    which converts the points to float32, fits exact similarities to 2-point samples (fixed
    seed), keeps the one with the least median squared residual, marks as inliers the
    points within 2.5 * 1.4826 * (1 + 5 / (n - 2)) * sqrt(median) of it (about 9.9 times the
    median residual for 5 points), then refines the same least-squares objective as here on
    the inliers only (Levenberg-Marquardt, 10 iterations). With all 5 landmarks inliers the
    two agree to float32 rounding (translations within 0.004 px); on real faces LMEDS
    sometimes keeps only 3 (2 of the 10 faces of the peer tests' photos), and facexlib's
    alignment then follows those 3. This fit always uses all of them.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (K, P, 2), got {tuple(landmarks.shape)}")
    src = landmarks.double()
    dst = (face_template() if template is None else template).to(src)
    if dst.shape != src.shape[1:]:
        raise ValueError(f"template must be {tuple(src.shape[1:])}, got {tuple(dst.shape)}")
    src_mean, dst_mean = src.mean(1, keepdim=True), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean  # centred, so the scale/rotation does not see t
    re = (a * b).sum((1, 2))  # real part of sum(conj(a) b)
    im = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(1)
    norm = (a * a).sum((1, 2)).clamp_min(1e-12)  # coincident landmarks: no NaN, a zero map
    c, s = re / norm, im / norm
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (K, 2, 2)
    shift = dst_mean - (rot @ src_mean.transpose(1, 2)).squeeze(-1)
    return torch.cat([rot, shift.unsqueeze(-1)], -1).float()
