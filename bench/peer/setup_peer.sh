#!/usr/bin/env bash
# Make the peer's environment, bench/peer/.venv: a venv of HOST_PYTHON's interpreter whose
# own site-packages hold gfpgan, realesrgan, basicsr and facexlib (requirements.txt), and
# which sees HOST_PYTHON's packages (torch, torchvision, numpy, cv2, av, ...) after its own
# through a .pth file. vidrestore's environment never sees the peer's packages.
#
#   bench/peer/setup_peer.sh [HOST_PYTHON]            # from the package index (builds basicsr)
#   WHEELS=DIR bench/peer/setup_peer.sh [HOST_PYTHON] # offline, from wheels in DIR
#
# HOST_PYTHON defaults to python3; PEER_VENV overrides where the venv goes. Ends by
# importing the peer (`run_peer.py --check`). About a minute from the index, seconds offline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
host=${1:-python3}
venv=${PEER_VENV:-$here/.venv}

"$host" -m venv --without-pip --clear "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The host's package folders, its PYTHONPATH included (carried wheels on a GPU machine),
# appended after the venv's own site-packages. The repository root is left out.
"$host" - "$site/_host_packages.pth" "$here/../.." <<'PY'
import os, sys
pth, repo = sys.argv[1], os.path.realpath(sys.argv[2])
keep = [p for p in sys.path if p and os.path.isdir(p) and os.path.realpath(p) != repo
        and ("-packages" in p or p in os.environ.get("PYTHONPATH", "").split(os.pathsep))]
with open(pth, "w") as f:
    f.write("\n".join(dict.fromkeys(keep)) + "\n")
PY
if [ -n "${WHEELS:-}" ]; then
  "$host" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl
else
  PIP_FIND_LINKS= "$host" -m pip install -q --no-deps --target "$site" -r "$here/requirements.txt"
fi
"$venv/bin/python" "$here/run_peer.py" --check
