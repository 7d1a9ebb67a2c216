"""Sources and sinks: the only modules that know about PyAV and Pillow.

Nothing is imported here: `preview` must be importable before PyAV is (see its docstring).
"""
