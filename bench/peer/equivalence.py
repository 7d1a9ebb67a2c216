"""The peer's side of the equivalence tests (tests/peer/test_equivalence.py): facexlib,
gfpgan, realesrgan and CodeFormer run on inputs the test prepared, their outputs written for
the test to compare with vidrestore's.

Runs with bench/peer/.venv/bin/python (see setup_peer.sh), never in vidrestore's environment.

    equivalence.py --inputs in.npz --weights DIR --out out.npz [--threads N] [--parts ...]

`in.npz` holds the inputs of each part (names below, BGR uint8 images as the peer takes
them); `out.npz` gets the peer's results under `<part>.<name>`. Every result comes from the
peer's own functions, called as GFPGANer and RealESRGANer call them; where a harness has to
reach inside (a network's input and output, a stub network), it wraps or replaces an
instance attribute and leaves the peer's code unchanged:

- template: FaceRestoreHelper(512).face_template.
- align: `align.frame{i}`, `align.landmarks{i}` (K, 5, 2) -> FaceRestoreHelper.align_warp_face
  on the uint8 frame (`crops{i}`, as GFPGANer), and on the same frame as float32 (`cropsf{i}`,
  geometry without the uint8 rounding); `affines{i}` and `inliers{i}` (LMEDS's inlier mask,
  from the same cv2.estimateAffinePartial2D call facexlib makes).
- gfpgan: `gfpgan.face` (512, 512, 3) -> GFPGANer(arch='clean').enhance(has_aligned=True):
  once with the network's forward wrapped to pass randomize_noise=False (`input`, `raw`: the
  network's input and output tensors; `out`: the restored face), then twice as it is, fresh
  noise each call (`fresh_a`, `fresh_b`).
- codeformer: `codeformer.face` (512, 512, 3) and `codeformer.w` (fidelity weights) -> the
  network of CodeFormer's own code (codeformer-pip: sczhou/CodeFormer's codeformer_arch and
  basicsr fork) built and loaded as inference_codeformer.py builds it, from
  `codeformer.pth`'s 'params_ema', and that script's steps on the aligned face: img2tensor,
  normalize (0.5, 0.5), `net(x, w=w, adain=True)[0]`, tensor2img(min_max=(-1, 1)),
  astype('uint8'): `input`, `raw{j}` (the network's output for w[j]) and `out{j}`.
- esrgan: `esrgan.<model>.<i>` frames -> RealESRGANer(tile=0, pre_pad=0).enhance at the
  model's own scale: `<model>.<i>.float` (RGB (3, sH, sW) float32, clamped, before the
  uint8 rounding; post_process wrapped) and `<model>.<i>.out` (BGR uint8).
- resize: `resize.frame` (h, w, 3) and `resize.plate` (4h, 4w, 3) float RGB in [0, 1] ->
  RealESRGANer(scale=4) around a stub network that returns the plate, enhance(outscale=2):
  `out` (BGR uint8), the x4 output resized as the peer resizes it.
- paste: `paste.frame`, `paste.background` (the upscaled frame), `paste.crops` (K, S, S, 3),
  `paste.affines` (K, 2, 3), `paste.scale` -> FaceRestoreHelper(use_parse=False)
  .get_inverse_affine + paste_faces_to_input_image(upsample_img=background): `out`; and the
  same with `paste.background_float` and `paste.crops_float` (float32, 0-255): `out_float`.
- parse: `parse.logits` (1, 19, 512, 512) -> FaceRestoreHelper(use_parse=True, upscale 1)
  with its ParseNet replaced by a stub returning these logits, pasting a face of 65535 onto
  0 with the identity affine, so the uint16 output is facexlib's paste mask x 65535: `mask`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torchvision_shim  # noqa: E402 - must run before basicsr is imported

torchvision_shim.install()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from run_peer import background_net, weights_folder  # noqa: E402

PARTS = ("template", "align", "gfpgan", "codeformer", "esrgan", "resize", "paste", "parse")
DEVICE = torch.device("cpu")


def helper(upscale: float, use_parse: bool):
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    return FaceRestoreHelper(upscale, face_size=512, crop_ratio=(1, 1),
                             det_model="retinaface_mobile0.25", save_ext="png",
                             use_parse=use_parse, device=DEVICE, model_rootpath="gfpgan/weights")


def part_template(inputs, weights: Path) -> dict:
    return {"face_template": helper(1, False).face_template}


def part_align(inputs, weights: Path) -> dict:
    out, face = {}, helper(1, False)
    for i in range(int(inputs["align.count"])):
        frame, landmarks = inputs[f"align.frame{i}"], inputs[f"align.landmarks{i}"]
        for name, image in (("crops", frame), ("cropsf", frame.astype(np.float32))):
            face.clean_all()
            face.read_image(image)
            face.all_landmarks_5 = list(landmarks)
            face.align_warp_face()
            out[f"{name}{i}"] = np.stack(face.cropped_faces)
        out[f"affines{i}"] = np.stack(face.affine_matrices)
        # the call align_warp_face makes, for its inlier mask
        out[f"inliers{i}"] = np.stack([
            cv2.estimateAffinePartial2D(lm, face.face_template, method=cv2.LMEDS)[1][:, 0]
            for lm in landmarks])
    return out


def part_gfpgan(inputs, weights: Path) -> dict:
    from gfpgan import GFPGANer

    enhancer = GFPGANer(model_path=str(weights / "GFPGANv1.3.pth"), upscale=1, arch="clean",
                        channel_multiplier=2, bg_upsampler=None, device=DEVICE)
    net, face, seen = enhancer.gfpgan, inputs["gfpgan.face"], {}
    forward = net.forward

    def fixed_noise(x, **kwargs):
        out = forward(x, **{**kwargs, "randomize_noise": False})
        seen.update(input=x.detach().clone().numpy(), raw=out[0].detach().clone().numpy())
        return out

    net.forward = fixed_noise
    restored = enhancer.enhance(face, has_aligned=True, paste_back=False)[1][0]
    del net.forward  # back to the class's forward: fresh noise in every style conv
    fresh = [enhancer.enhance(face, has_aligned=True, paste_back=False)[1][0] for _ in "ab"]
    return {**seen, "out": restored, "fresh_a": fresh[0], "fresh_b": fresh[1]}


def part_codeformer(inputs, weights: Path) -> dict:
    if "codeformer.face" not in inputs.files:
        return {}
    from codeformer.basicsr.archs.codeformer_arch import CodeFormer
    from codeformer.basicsr.utils import img2tensor, tensor2img
    from torchvision.transforms.functional import normalize

    net = CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9,
                     connect_list=["32", "64", "128", "256"]).to(DEVICE)
    net.load_state_dict(torch.load(weights / "codeformer.pth")["params_ema"])
    net.eval()
    face_t = img2tensor(inputs["codeformer.face"] / 255.0, bgr2rgb=True, float32=True)
    normalize(face_t, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
    face_t = face_t.unsqueeze(0).to(DEVICE)
    out = {"input": face_t.numpy()}
    for j, w in enumerate(inputs["codeformer.w"]):
        output = net(face_t, w=float(w), adain=True)[0]
        out[f"raw{j}"] = output.numpy()
        out[f"out{j}"] = tensor2img(output, rgb2bgr=True, min_max=(-1, 1)).astype("uint8")
    return out


def part_esrgan(inputs, weights: Path) -> dict:
    from realesrgan import RealESRGANer

    out = {}
    for model in ("RealESRGAN_x2plus", "realesr-general-x4v3"):
        keys = sorted(k for k in inputs.files if k.startswith(f"esrgan.{model}."))
        if not keys:
            continue
        net, scale = background_net(model)
        upsampler = RealESRGANer(scale=scale, model_path=str(weights / f"{model}.pth"),
                                 model=net, tile=0, tile_pad=10, pre_pad=0, half=False,
                                 device=DEVICE)
        post, seen = upsampler.post_process, {}

        def captured(post=post, seen=seen):
            result = post()
            seen["float"] = result.squeeze(0).float().clamp(0, 1).numpy()  # as enhance does
            return result

        upsampler.post_process = captured
        for key in keys:
            name = key.removeprefix("esrgan.")
            out[f"{name}.out"] = upsampler.enhance(inputs[key])[0]
            out[f"{name}.float"] = seen["float"]
    return out


class PlateNet(torch.nn.Module):
    """Stub x4 network: returns the given (1, 3, 4h, 4w) image, whatever it is fed."""

    def __init__(self, plate: np.ndarray) -> None:
        super().__init__()
        self.plate = torch.from_numpy(plate.transpose(2, 0, 1).copy())[None].float()

    def forward(self, x):
        return self.plate.expand(x.shape[0], -1, -1, -1)


def part_resize(inputs, weights: Path) -> dict:
    from realesrgan import RealESRGANer

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "plate.pth"
        torch.save({"params": {}}, empty)
        upsampler = RealESRGANer(scale=4, model_path=str(empty),
                                 model=PlateNet(inputs["resize.plate"]), tile=0, pre_pad=0,
                                 half=False, device=DEVICE)
    return {"out": upsampler.enhance(inputs["resize.frame"], outscale=2)[0]}


def _paste(frame, background, crops, affines, scale):
    face = helper(scale, False)
    face.read_image(frame)
    face.affine_matrices = [a.astype(np.float64) for a in affines]
    face.get_inverse_affine(None)
    for crop in crops:
        face.add_restored_face(crop)
    return face.paste_faces_to_input_image(upsample_img=background)


def part_paste(inputs, weights: Path) -> dict:
    args = inputs["paste.frame"], inputs["paste.affines"], int(inputs["paste.scale"])
    frame, affines, scale = args
    return {"out": _paste(frame, inputs["paste.background"], inputs["paste.crops"], affines,
                          scale),
            "out_float": _paste(frame, inputs["paste.background_float"],
                                inputs["paste.crops_float"], affines, scale)}


def part_parse(inputs, weights: Path) -> dict:
    logits = torch.from_numpy(inputs["parse.logits"])
    face = helper(1, True)
    face.face_parse = lambda x: (logits,)  # the stub ParseNet: these logits for any face
    face.read_image(np.zeros((512, 512, 3), np.uint8))
    face.inverse_affine_matrices = [np.array([[1.0, 0, 0], [0, 1, 0]])]
    face.add_restored_face(np.full((512, 512, 3), 65535, np.float32))
    out = face.paste_faces_to_input_image(upsample_img=np.zeros((512, 512, 3), np.float32))
    assert out.dtype == np.uint16, out.dtype
    return {"mask": out[..., 0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, help="torch threads (the test's own count)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = np.load(args.inputs.resolve())
    weights, out = args.weights.resolve(), args.out.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights_folder(weights, Path(tmp))
        os.chdir(tmp)  # GFPGANer and facexlib read gfpgan/weights relative to here
        with torch.no_grad():
            for part in args.parts:
                found = globals()[f"part_{part}"](inputs, weights)
                results.update({f"{part}.{k}": np.asarray(v) for k, v in found.items()})
    np.savez(out, **results)


if __name__ == "__main__":
    main()
