"""The live preview: input and restored frame side by side over a status bar, in a window.

`side_by_side` builds the picture (also when there is no window: it is what `--record`
writes). `PreviewWindow` shows it with OpenCV's HighGUI; it first checks that there is a
display, since OpenCV's Qt backend aborts the whole process when it cannot reach one.

Import this module (it imports cv2) before PyAV. The opencv-python and av wheels both
bundle the X helper libraries libxcb-shape, -shm and -xfixes under the same file names, and
whichever loads first serves both. PyAV's copies are linked to PyAV's private libxcb, so when
av comes first, OpenCV's Qt window talks to two libxcb instances and spins forever at 100%
CPU inside `namedWindow` (PyAV issue #978; seen here with av 18 and opencv-python 5.0).
`import cv2` loads OpenCV's copies, which then serve both; PyAV needs them only for screen
capture, which vidrestore never does. `PreviewWindow` refuses to open when the order was
wrong, rather than hang.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import x_display
from ..errors import DisplayError

WINDOW_TITLE = "vidrestore webcam"
_MAX_WINDOW = (1600, 900)  # the window opens no larger than this; it can be resized
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAR_RGB = (24, 24, 24)
_TEXT_RGB = (235, 235, 235)
_OFF_RGB = (255, 170, 60)  # restoration switched off: the right-hand label stands out
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts")

KEYS_HELP = "q quit, space restore on/off, s snapshot"


def clashing_xcb_helpers() -> list[str]:
    """X helper libraries this process loaded from PyAV's wheel under names OpenCV's wheel
    also uses: OpenCV's Qt then runs on them and its window hangs. Empty when OpenCV was
    imported first (it loads its own copies on import), or off Linux."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    site = Path(cv2.__file__).resolve().parent.parent  # the wheels' libs sit beside cv2
    opencv_names = {q.name for d in site.glob("opencv*.libs") for q in d.glob("libxcb-*")}
    loaded = {Path(line.split()[-1]) for line in maps.splitlines() if "libxcb-" in line}
    return sorted(p.name for p in loaded
                  if p.parent.name == "av.libs" and p.name in opencv_names)


@dataclass(frozen=True)
class Status:
    """What the status bar says. fps: shown frames per second over the last second;
    latency_ms: capture to screen of the last frame shown; None until measured."""

    fps: float | None
    latency_ms: float | None
    dropped: int
    restoring: bool


def bar_height(frame_height: int) -> int:
    """Height of the status bar under the panes, even, so 4:2:0 recording keeps even sizes."""
    return max(20, round(frame_height * 0.06)) // 2 * 2


def side_by_side(input_rgb: np.ndarray, output_rgb: np.ndarray, status: Status) -> np.ndarray:
    """(H + bar, 2W, 3) uint8 RGB: the input (blown up to the output's size, nearest
    neighbour so its own pixels show) left, the output right, the status bar below."""
    height, width = output_rgb.shape[:2]
    left = input_rgb
    if input_rgb.shape[:2] != (height, width):
        left = cv2.resize(input_rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    bar = bar_height(height)
    canvas = np.empty((height + bar, 2 * width, 3), dtype=np.uint8)
    canvas[:height, :width] = left
    canvas[:height, width:] = output_rgb
    canvas[height:] = _BAR_RGB
    _write_status(canvas, height, width, status)
    return canvas


def _write_status(canvas: np.ndarray, top: int, width: int, status: Status) -> None:
    fps = "-" if status.fps is None else f"{status.fps:.1f}"
    latency = "-" if status.latency_ms is None else f"{status.latency_ms:.0f} ms"
    label = "restored" if status.restoring else "restoration OFF"
    colour = _TEXT_RGB if status.restoring else _OFF_RGB
    right_text = f"{label} | {fps} fps | latency {latency} | dropped {status.dropped}"
    _put_fitted(canvas, f"input | {KEYS_HELP}", 0, top, width, _TEXT_RGB)
    _put_fitted(canvas, right_text, width, top, width, colour)


def _put_fitted(canvas: np.ndarray, text: str, left: int, top: int, width: int,
                colour: tuple[int, int, int]) -> None:
    """`text` in the bar under one pane, shrunk to fit the pane's width."""
    bar = canvas.shape[0] - top
    margin = max(3, width // 100)
    thickness = 1 if bar < 40 else 2
    scale = bar / 48
    text_width = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    scale *= min(1.0, (width - 2 * margin) / max(text_width, 1))
    cv2.putText(canvas, text, (left + margin, top + round(bar * 0.7)), _FONT, scale, colour,
                thickness, cv2.LINE_AA)


def check_display() -> None:
    """Raise `DisplayError` (one line, suggesting --no-window) when no window can open."""
    if not sys.platform.startswith("linux"):
        return  # Windows and macOS always have a screen session for a desktop app
    name = x_display()
    if not name:
        raise DisplayError("no display to open the preview window on ($DISPLAY is not set); "
                           "pass --no-window to run headless")
    try:
        xcb = ctypes.CDLL(ctypes.util.find_library("xcb") or "libxcb.so.1")
    except OSError as exc:
        raise DisplayError("cannot open a window: the X client library libxcb is missing; "
                           "install it (libxcb1) or pass --no-window") from exc
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(name.encode(), None)
    failed = xcb.xcb_connection_has_error(connection)
    xcb.xcb_disconnect(connection)
    if failed:
        raise DisplayError(f"cannot connect to display {name!r} (no X server there, or no "
                           "permission); pass --no-window to run headless")


class PreviewWindow:
    """One OpenCV window; `show` and `poll_key` also run its event loop."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        clashing = clashing_xcb_helpers()
        if clashing:
            raise DisplayError(f"the preview window cannot open in this process: PyAV was "
                               f"imported before OpenCV and its {clashing[0]} would hang the "
                               "window; import cv2 (or vidrestore.io.preview) before av, or "
                               "pass --no-window")
        check_display()
        _use_system_fonts()
        self.title = title
        self._sized = False
        flags = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
        try:
            cv2.namedWindow(title, flags)
        except cv2.error as exc:
            raise DisplayError("this OpenCV build cannot open windows (opencv-python-headless?);"
                               " install opencv-python or pass --no-window") from exc

    def show(self, rgb: np.ndarray) -> int:
        """Show an RGB image and let the window paint it; returns a key pressed, or -1."""
        if not self._sized:
            height, width = rgb.shape[:2]
            fit = min(1.0, _MAX_WINDOW[0] / width, _MAX_WINDOW[1] / height)
            cv2.resizeWindow(self.title, round(width * fit), round(height * fit))
            self._sized = True
        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return cv2.waitKey(1)

    def poll_key(self, wait_ms: int = 1) -> int:
        return cv2.waitKey(wait_ms)

    @property
    def closed(self) -> bool:
        """The user closed the window (its close button)."""
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


def _use_system_fonts() -> None:
    """OpenCV's Qt ships no fonts and warns about it on stderr; point it at the system's
    (it never draws text we rely on: the status bar is drawn into the image)."""
    for folder in _FONT_DIRS:
        if Path(folder).is_dir():
            os.environ.setdefault("QT_QPA_FONTDIR", folder)
            return
