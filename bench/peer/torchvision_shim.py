"""The one import shim the peer needs, for the peer harness only (vidrestore never uses it).

basicsr 1.4.2 (imported by gfpgan and realesrgan) does
`from torchvision.transforms.functional_tensor import rgb_to_grayscale`; torchvision 0.17
removed that private module. `install()` registers a module of that name whose
`rgb_to_grayscale` is the public `torchvision.transforms.functional.rgb_to_grayscale` (the
same function, moved). Nothing else of the peer is changed.
"""

from __future__ import annotations

import importlib.util
import sys
import types

MODULE = "torchvision.transforms.functional_tensor"


def install() -> bool:
    """Register the shim unless torchvision still has the module; True when it was added."""
    if MODULE in sys.modules or importlib.util.find_spec(MODULE) is not None:
        return False
    import torchvision.transforms.functional as functional

    shim = types.ModuleType(MODULE)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[MODULE] = shim
    return True
