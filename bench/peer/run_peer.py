"""The peer, frame by frame: GFPGAN's `GFPGANer` with Real-ESRGAN's `RealESRGANer` as its
background upsampler, set up and called as Real-ESRGAN's `inference_realesrgan_video.py
--face_enhance` does, timed on the same clip and weight files as vidrestore.

Runs with bench/peer/.venv/bin/python (see setup_peer.sh), never in vidrestore's environment.

    run_peer.py --input clip.mp4 --weights DIR --bg-model RealESRGAN_x2plus --outscale 2
                --frames 50 --json peer.json [--output out.mp4] [--device cuda]
    run_peer.py --check      # import the peer and print its versions

As the video script: RealESRGANer(tile=0, tile_pad=10, pre_pad=0, half on CUDA), GFPGANer(
arch='clean', channel_multiplier=2, upscale=outscale, bg_upsampler=...), then per frame
`enhance(img, has_aligned=False, only_center_face=False, paste_back=True)` on BGR uint8 and a
libx264 yuv420p encode with FFmpeg's defaults (CRF 23, medium, frame threads). Decoding and
encoding use PyAV in this one thread (the script pipes through ffmpeg processes instead).

Two departures, both forced by random weights and both in the peer's favour:
- face detection uses RetinaFace MobileNet-0.25 with real weights (the ones bundled with
  vidrestore, in `detection_mobilenet0.25_Final.pth`) instead of the script's ResNet-50, whose
  random weights would find no face. GFPGANer is built as it is, with a random ResNet-50 file
  beside the others, and its detector is then swapped. vidrestore's runs use the same file.
- realesr-general-x4v3 runs alone (the script's default denoise strength 0.5 would blend in
  a second network, realesr-general-wdn-x4v3: `-dn 1` here).

Per frame it times decode, the whole `enhance`, its parts (detect, align, restore = GFPGAN
forwards, background = RealESRGANer.enhance, paste) and encode; parts are found by wrapping
the instances' methods with a CUDA-synchronised clock, the peer's code is not changed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torchvision_shim  # noqa: E402 - must run before basicsr is imported

torchvision_shim.install()

import av  # noqa: E402
import torch  # noqa: E402

PEER_PACKAGES = ("gfpgan", "realesrgan", "basicsr", "facexlib", "codeformer-pip")
GFPGAN_FILE = "GFPGANv1.3.pth"
DETECTOR_FILES = ("detection_mobilenet0.25_Final.pth", "parsing_parsenet.pth")
PLACEHOLDER_R50 = "detection_Resnet50_Final.pth"  # GFPGANer loads it before the swap


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {name: version(name) for name in PEER_PACKAGES}
    found.update(torch=torch.__version__, av=av.__version__, python=platform.python_version())
    return found


def check() -> None:
    from gfpgan import GFPGANer  # noqa: F401
    from realesrgan import RealESRGANer  # noqa: F401

    print(json.dumps({"peer": "importable", "shim_installed": torchvision_shim.MODULE in
                      sys.modules, **versions()}))


# --- building the peer as the video script does -----------------------------------------------


def background_net(name: str):
    """(network, its scale) for a Real-ESRGAN model name, with the script's settings."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    if name == "RealESRGAN_x2plus":
        return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32,
                       scale=2), 2
    if name == "realesr-general-x4v3":
        return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4,
                               act_type="prelu"), 4
    raise SystemExit(f"run_peer.py: unknown background model {name!r}")


def weights_folder(weights: Path, work: Path) -> Path:
    """`gfpgan/weights` under `work` (GFPGANer's model_rootpath, relative to the working
    folder) with links to the shared files and a random ResNet-50 for GFPGANer to load."""
    from facexlib.detection.retinaface import RetinaFace

    folder = work / "gfpgan" / "weights"
    folder.mkdir(parents=True)
    for name in DETECTOR_FILES:
        (folder / name).symlink_to(weights / name)
    torch.manual_seed(0)
    torch.save(RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict(),
               folder / PLACEHOLDER_R50)
    return folder


def build_peer(args, device: torch.device):
    from facexlib.detection import init_detection_model
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    net, netscale = background_net(args.bg_model)
    upsampler = RealESRGANer(scale=netscale, model_path=str(args.weights / f"{args.bg_model}.pth"),
                             dni_weight=None, model=net, tile=0, tile_pad=10, pre_pad=0,
                             half=device.type == "cuda", device=device)
    enhancer = GFPGANer(model_path=str(args.weights / GFPGAN_FILE), upscale=args.outscale,
                        arch="clean", channel_multiplier=2, bg_upsampler=upsampler, device=device)
    enhancer.face_helper.face_det = init_detection_model(
        "retinaface_mobile0.25", half=False, device=device, model_rootpath="gfpgan/weights")
    return enhancer


# --- timing ----------------------------------------------------------------------------------


class Clock:
    """Milliseconds spent in wrapped methods, per frame; CUDA is synchronised at each edge."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.frame: dict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def wrap(self, owner, method: str, part: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            started = self.now()
            try:
                return inner(*args, **kwargs)
            finally:
                self.frame[part] += (self.now() - started) * 1000

        setattr(owner, method, timed)

    def take(self) -> dict[str, float]:
        parts, self.frame = dict(self.frame), defaultdict(float)
        return parts


def instrument(enhancer, clock: Clock) -> None:
    helper = enhancer.face_helper
    clock.wrap(helper, "get_face_landmarks_5", "detect")
    clock.wrap(helper, "align_warp_face", "align")
    clock.wrap(enhancer.gfpgan, "forward", "restore")
    clock.wrap(enhancer.bg_upsampler, "enhance", "background")
    clock.wrap(helper, "get_inverse_affine", "paste")
    clock.wrap(helper, "paste_faces_to_input_image", "paste")


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    args.weights = args.weights.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        weights_folder(args.weights, Path(tmp))
        os.chdir(tmp)  # GFPGANer and facexlib read gfpgan/weights relative to here
        enhancer = build_peer(args, device)
        clock = Clock(device)
        instrument(enhancer, clock)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        records = process(args, enhancer, clock, args.output or Path(tmp) / "peer.mp4")
    return summarise(args, device, records)


def process(args, enhancer, clock: Clock, output: Path) -> list[dict]:
    records = []
    with av.open(str(args.input)) as source, av.open(str(output), "w") as sink:
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        stream = None
        frames = source.decode(video)
        while len(records) < args.frames:
            started = clock.now()
            frame = next(frames, None)
            if frame is None:
                break
            img = frame.to_ndarray(format="bgr24")
            decoded = clock.now()
            _, restored, output_img = enhancer.enhance(img, has_aligned=False,
                                                       only_center_face=False, paste_back=True)
            enhanced = clock.now()
            if stream is None:
                stream = sink.add_stream("libx264", rate=video.average_rate or 25)
                stream.height, stream.width = output_img.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_type = "FRAME"  # as the ffmpeg command line
            out = av.VideoFrame.from_ndarray(output_img, format="bgr24")
            for packet in stream.encode(out):
                sink.mux(packet)
            done = clock.now()
            records.append({"decode": (decoded - started) * 1000,
                            "enhance": (enhanced - decoded) * 1000,
                            "encode": (done - enhanced) * 1000, **clock.take(),
                            "faces": len(restored), "done_s": done,
                            "size_out": list(output_img.shape[1::-1])})
        if stream is not None:
            for packet in stream.encode():
                sink.mux(packet)
    return records


def summarise(args, device: torch.device, records: list[dict]) -> dict:
    """Figures over the frames after the first (whose time holds CUDA's start-up)."""
    if len(records) < 2:
        raise SystemExit("run_peer.py: need at least 2 frames to time")
    steady = records[1:]
    span = steady[-1]["done_s"] - records[0]["done_s"]
    parts = sorted({k for r in records for k in r} - {"faces", "done_s", "size_out"})
    result = {
        "peer": "GFPGANer(v1.3 clean) + RealESRGANer, frame by frame",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "frames": len(records),
        "fps": round(len(steady) / span, 4),
        "enhance_only_fps": round(1000 / statistics.mean(r["enhance"] for r in steady), 4),
        "first_frame_s": round(records[0]["decode"] / 1000 + records[0]["enhance"] / 1000
                               + records[0]["encode"] / 1000, 3),
        "ms_per_frame": {k: round(statistics.mean(r.get(k, 0.0) for r in steady), 3)
                         for k in parts},
        "faces_per_frame": round(statistics.mean(r["faces"] for r in records), 3),
        "size_out": records[0]["size_out"],
        "peak_gpu_memory_mb": (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                               if device.type == "cuda" else None),
        "settings": {"bg_model": args.bg_model, "outscale": args.outscale, "tile": 0,
                     "half_background": device.type == "cuda", "gfpgan": "fp32",
                     "detector": "retinaface_mobile0.25 (vidrestore's bundled weights)",
                     "encode": "libx264 yuv420p, FFmpeg defaults (crf 23, medium)"},
        "versions": versions(),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="import the peer and stop")
    parser.add_argument("--input", type=Path)
    parser.add_argument("--weights", type=Path, help="folder with the weight files")
    parser.add_argument("--bg-model", default="RealESRGAN_x2plus",
                        choices=["RealESRGAN_x2plus", "realesr-general-x4v3"])
    parser.add_argument("--outscale", type=float, default=2)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, help="restored video (default: not kept)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.check:
        check()
        return
    if args.input is None or args.weights is None:
        parser.error("--input and --weights are required")
    args.input = args.input.resolve()
    args.output = args.output.resolve() if args.output else None
    args.json = args.json.resolve() if args.json else None
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
