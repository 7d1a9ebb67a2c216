#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repository root, after bench/gpu_session.sh has
# prepared .whl/ and bench/out/media/ here (carried there by the device tool):
#
#   bash bench/gpu_run.sh tests                  the CUDA tests (-m needs_cuda) + environment
#   bash bench/gpu_run.sh hq|general|fast [OPTS] one benchmark configuration with the peer;
#                                                OPTS go to bench/gpu_throughput.py
#
# Installs the carried wheels into /tmp/site and the peer's venv (bench/peer/.venv) once per
# machine. Figures go to $OUT/gpu_throughput_<configuration>.json (bench/out/ without $OUT).
# Defaults: 240 timed frames, 960 for the memory run, batches of 8, 60 peer frames.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: bench/gpu_run.sh tests|hq|general|fast [gpu_throughput options]}
shift
out=${OUT:-bench/out}
export PYTHONUNBUFFERED=1 VIDRESTORE_TEST_MEDIA=$PWD/bench/out/media

if [ ! -f /tmp/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/ours/*.whl
  touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/site:$PWD
if [ ! -x bench/peer/.venv/bin/python ]; then
  WHEELS=.whl/peer bench/peer/setup_peer.sh python3
fi

case $phase in
  tests)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    python3 -c 'import torch, av; from av.codec.hwaccel import hwdevices_available as h
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("av", av.__version__, "hw devices", h())'
    ldconfig -p | grep -E 'libnvcuvid|libcuda\.so' || echo "no libnvcuvid: NVDEC unavailable"
    python3 -m pytest -q -p no:cacheprovider -m needs_cuda -o addopts= -ra \
      tests/unit/test_upscale.py tests/unit/test_face_restorer.py tests/unit/test_detect.py \
      tests/unit/test_codeformer.py \
      tests/unit/test_colour.py tests/unit/test_speed_paths.py \
      tests/io/test_hwdecode_and_encode_threads.py 2>&1 | tee "$out/cuda_tests.log"
    ;;
  hq|general|fast)
    python3 bench/gpu_throughput.py --device cuda --configs "$phase" --frames 240 \
      --long-frames 960 --batch-size 8 --peer --peer-frames 60 \
      --json "$out/gpu_throughput_$phase.json" "$@"
    ;;
  *)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
