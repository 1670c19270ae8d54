"""The real-sound dev/test split (mats.data.sounds.fetch_sound_split): split by Debian package.

The split folders are built once into $MATS_HOME/sounds-dev and sounds-test (about 300 MB of .deb
downloads the first time) and reused after; the tests skip only when a package can be neither
found in that cache nor downloaded (SoundsError). The fake-package tests run offline."""

import collections
import filecmp
import inspect
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import real_sounds_folder, require
from mats.audio import load_audio
from mats.data import sounds as S

ROOT = Path(__file__).resolve().parents[1]


def _fetch(split):
    try:
        folder = S.fetch_sound_split(split)
    except S.SoundsError as e:  # no cache and neither apt nor HTTP reachable
        require(False, f"sound split {split!r} unavailable: {e}")
    return folder, S.read_metadata(folder)


@pytest.fixture(scope="module")
def dev():
    return _fetch("dev")


@pytest.fixture(scope="module")
def test_split():
    return _fetch("test")


@pytest.fixture(scope="module")
def legacy():
    folder = real_sounds_folder()
    return folder, S.read_metadata(folder)


# -- the split's definition (no download) --------------------------------------------------------

def test_splits_are_disjoint_by_package():
    dev, test = set(S.SPLITS["dev"]), set(S.SPLITS["test"])
    assert set(S.SPLITS) == {"dev", "test"}
    assert not dev & test
    assert set(S.DEFAULT_PACKAGES) <= dev  # the clips the project was tuned on are dev
    # fetch_unlabelled_sounds (the 'shift' bridge's audio mean) only ever reads dev packages
    unlabelled = inspect.signature(S.fetch_unlabelled_sounds).parameters["packages"].default
    assert not set(unlabelled) & test
    for name in dev | test:  # every package is pinned for the HTTP fallback
        pkg = S.PACKAGES[name]
        assert pkg.filename.startswith("pool/main/") and pkg.filename.endswith("_all.deb")
        assert len(pkg.sha256) == 64
        assert any(rule[0] == name for rule in S.RULES)
    with pytest.raises(S.SoundsError, match="unknown sound split"):
        S.fetch_sound_split("train")


def test_rules_see_names_only():
    assert list(inspect.signature(S._label).parameters) == ["package", "name"]
    for pkg, _pattern, label, synonyms in S.RULES:
        assert pkg in S.PACKAGES and label == synonyms[0] and len(set(synonyms)) == len(synonyms)


def test_spread_and_cap_are_deterministic():
    assert S._spread(list(range(20)), 8) == [1, 3, 6, 8, 11, 13, 16, 18]
    assert S._spread([3, 1], 8) == [3, 1]
    rows = [{"file": f"clips/p/{i:03d}.wav", "labels": ["speech" if i % 2 else "dog"]} for i in range(60)]
    kept = S._cap(rows)
    shuffled = S._cap(list(reversed(rows)))
    assert kept == shuffled == sorted(kept, key=lambda r: r["file"])
    counts = collections.Counter(r["labels"][0] for r in kept)
    assert counts == {"speech": S.SPEECH_CAP, "dog": S.CLASS_CAP}


def test_drumkit_xml_instrument_map():
    xml = b"""<?xml version="1.0"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit"><name>K</name><instrumentList>
 <instrument><id>0</id><name>Kick</name>
  <layer><filename>soft.wav</filename><min>0</min><max>0.5</max></layer>
  <layer><filename>loud.wav</filename><min>0.5</min><max>1</max></layer></instrument>
 <instrument><id>1</id><name>Snare</name><filename>snare.flac</filename></instrument>
 <instrument><id>2</id><name>Nothing</name></instrument>
</instrumentList></drumkit_info>"""
    assert list(S._drumkit_samples(xml)) == [(0, "Kick", "loud.wav"), (1, "Snare", "snare.flac")]
    assert S._label("hydrogen-drumkits", "K: Kick")[0] == "bass drum"
    assert S._label("hydrogen-drumkits", "K: Snare Rimshot")[0] == "snare drum"
    assert S._label("hydrogen-drumkits", "K: Cowbell")[0] == "cowbell"
    assert S._label("hydrogen-drumkits", "K: Hi Hat Closed")[0] == "hi-hat"
    assert S._label("hydrogen-drumkits", "K: Stick") is None


# -- a fake package: the whole build offline ------------------------------------------------------

def _wav(seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(seed).uniform(-0.5, 0.5, 1600).astype(np.float32), 16000,
             format="WAV")
    return buf.getvalue()


def _fake_deb(path: Path, files: dict[str, bytes]) -> Path:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo("./usr/share/sounds/sound-icons/" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out = b"!<arch>\n"
    for name, content in [("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())]:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        out += content + (b"\n" if len(content) % 2 else b"")
    path.write_bytes(out)
    return path


def _build_fake(monkeypatch, dest: Path, files: dict[str, bytes]) -> list[dict]:
    monkeypatch.setattr(S, "_download_deb", lambda pkg, folder: _fake_deb(folder / "fake.deb", files))
    return S.read_metadata(S.fetch_real_sounds(dest, packages=("sound-icons",)))


def _strip(rows):
    return [(r["file"], r["labels"], r["original_name"]) for r in rows]


def test_labels_do_not_depend_on_the_audio(monkeypatch, tmp_path):
    names = ["guitar-12.wav", "piano-3.wav", "pisk-up.wav", "cembalo-1.wav"]
    a = _build_fake(monkeypatch, tmp_path / "a", {n: _wav(i) for i, n in enumerate(names)})
    # the same names with the audio swapped around (and one clip silent): the same labels
    swapped = {n: _wav(len(names) - i) for i, n in enumerate(names)}
    swapped["piano-3.wav"] = _wav(99)[:44] + bytes(3200)
    b = _build_fake(monkeypatch, tmp_path / "b", swapped)
    assert _strip(a) == _strip(b)
    assert [r["labels"][0] for r in a] == ["harpsichord", "guitar", "piano"]  # pisk-up: no rule


def test_build_is_deterministic_and_capped(monkeypatch, tmp_path):
    files = {f"percussion-{i}.wav": _wav(i) for i in range(20)}
    files.update({f"guitar-{i}.wav": _wav(100 + i) for i in range(3)})
    a = _build_fake(monkeypatch, tmp_path / "a", files)
    b = _build_fake(monkeypatch, tmp_path / "b", dict(reversed(files.items())))
    assert a == b
    for r in a:
        assert filecmp.cmp(tmp_path / "a" / r["file"], tmp_path / "b" / r["file"], shallow=False)
    counts = collections.Counter(r["labels"][0] for r in a)
    assert counts == {"percussion": S.CLASS_CAP, "guitar": 3}
    # the capped-out clips are not left on disk either
    assert len(list((tmp_path / "a" / "clips").rglob("*.wav"))) == len(a)


# -- the real split folders -----------------------------------------------------------------------

def _check_folder(folder, meta, split):
    assert (folder / ".complete").read_text() == f"{S._SPLIT_VERSION} {split} {','.join(S.SPLITS[split])}\n"
    assert [r["file"] for r in meta] == sorted({r["file"] for r in meta})  # sorted, unique
    for r in meta:
        assert r["split"] == split and r["source"] in S.SPLITS[split]
        assert r["file"].startswith(f"clips/{r['source']}/") and (folder / r["file"]).is_file()
        assert len(r["labels"]) == 1 and r["labels"][0] in r["synonyms"]
        # the label is a function of the package and the name only
        assert S._label(r["source"], r["original_name"]) == (r["labels"][0], r["synonyms"])
    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "clips").rglob("*") if p.is_file()}
    assert on_disk == {r["file"] for r in meta}
    assert {r["source"] for r in meta} == set(S.SPLITS[split])  # every package contributes
    for pkg in set(S.SPLITS[split]) - set(S._UNCAPPED):
        counts = collections.Counter(r["labels"][0] for r in meta if r["source"] == pkg)
        for label, n in counts.items():
            assert n <= (S.SPEECH_CAP if label == "speech" else S.CLASS_CAP), (pkg, label, n)


def test_dev_folder(dev):
    _check_folder(*dev, "dev")


def test_test_folder(test_split):
    folder, meta = test_split
    _check_folder(folder, meta, "test")
    assert len(meta) >= 120 and len({r["labels"][0] for r in meta}) >= 40


def test_sizes_and_disjointness(dev, test_split):
    (_, d), (_, t) = dev, test_split
    assert len(d) + len(t) >= 250
    assert not {r["source"] for r in d} & {r["source"] for r in t}


def test_dev_holds_the_91_tuning_clips(dev, legacy):
    (dev_folder, d), (legacy_folder, old) = dev, legacy
    assert len(old) == 91
    assert (legacy_folder / ".complete").read_text() == f"1 {','.join(S.DEFAULT_PACKAGES)}\n"
    by_file = {r["file"]: {k: v for k, v in r.items() if k != "split"} for r in d}
    for r in old:
        assert by_file[r["file"]] == r
        assert filecmp.cmp(legacy_folder / r["file"], dev_folder / r["file"], shallow=False)


def test_every_clip_decodes(dev, test_split):
    for folder, meta in (dev, test_split):
        for r in meta:
            info = sf.info(str(folder / r["file"]))  # libsndfile reads it as is
            assert info.frames > 0, r["file"]
            x = load_audio(folder / r["file"], 16000)
            assert x.dtype == np.float32 and x.size > 0 and np.isfinite(x).all(), r["file"]


def test_cached_test_split_rebuilds_identically(test_split, tmp_path):
    """Two small test packages built afresh (0.8 MB of download) give the cached folder's rows and bytes."""
    folder, meta = test_split
    small = ("sound-icons", "heroes-sound-effects")
    try:
        again = S.fetch_real_sounds(tmp_path / "again", packages=small)
    except S.SoundsError as e:
        require(False, f"cannot download {small}: {e}")
    cached = [{k: v for k, v in r.items() if k != "split"} for r in meta if r["source"] in small]
    rebuilt = S.read_metadata(again)
    assert rebuilt == cached
    for r in rebuilt:
        assert filecmp.cmp(again / r["file"], folder / r["file"], shallow=False)


def test_cli_prints_counts(test_split):
    out = subprocess.run([sys.executable, "-m", "mats.data.sounds", "test"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert out.returncode == 0, out.stderr
    folder, meta = test_split
    assert f"{len(meta)} clips" in out.stdout
    for pkg in S.TEST_PACKAGES:
        assert pkg in out.stdout
    assert "computer keyboard" in out.stdout and "classes:" in out.stdout
