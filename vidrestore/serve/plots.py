"""The report's plots for a finished job, drawn from its log at screen resolution.

The figures are `vidrestore report`'s own (`report.plot_identity`, `plot_quality`,
`plot_timings`) at `DPI` instead of the report's 500, so they load fast in a page. Plotting
is serialised: matplotlib's style context is process-wide and workers run in threads.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .. import report

DPI = 140
PLOTS = {"identity": report.plot_identity, "quality": report.plot_quality,
         "timings": report.plot_timings}
_lock = threading.Lock()
log = logging.getLogger(__name__)


def write_plots(log_path: Path, out_dir: Path) -> list[str]:
    """Write NAME.png for each plot the log allows into `out_dir`; return the names."""
    data = report.read_log(log_path)
    out_dir.mkdir(exist_ok=True)
    written = []
    with _lock, matplotlib.rc_context(report.STYLE):
        for name, draw in PLOTS.items():
            figure = draw(data)
            if figure is None:
                continue
            FigureCanvasAgg(figure)
            figure.savefig(out_dir / f"{name}.png", dpi=DPI)
            written.append(name)
    return written
