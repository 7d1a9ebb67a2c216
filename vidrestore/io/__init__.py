"""Sources and sinks: the only modules that know about PyAV and Pillow."""

from .probe import MediaInfo, probe

__all__ = ["MediaInfo", "probe"]
