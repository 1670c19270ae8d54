"""The offline default CLAP on real recorded sounds (Debian sound packages, see mats.sounds)."""

import numpy as np
import pytest

from conftest import real_sounds_folder, require
from mats.data.sounds import fetch_real_sounds, read_metadata


@pytest.fixture(scope="module")
def sounds():
    folder = real_sounds_folder()
    return folder, read_metadata(folder)


@pytest.fixture(scope="module")
def clap():
    from mats.clap import load_clap
    return load_clap("yamnet-minilm")


def _file(sounds, name):
    folder, meta = sounds
    return folder / next(r["file"] for r in meta if r["file"].endswith(name))


def test_metadata_rows(sounds):
    folder, meta = sounds
    assert len(meta) >= 60 and len({r["labels"][0] for r in meta}) >= 15
    for r in meta[:5]:
        assert (folder / r["file"]).is_file() and r["labels"][0] in r["synonyms"] and r["source"]


def test_shapes_norms_determinism(clap, sounds):
    files = [_file(sounds, "phone-incoming-call.oga"), _file(sounds, "36-sheep.wav")]
    a = clap.encode_audio(files)
    b = clap.encode_audio(files)
    assert a.shape == (2, 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, b)
    t = clap.encode_text(["a telephone ringing", "a sheep bleating"])
    assert t.shape == (2, 384) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert "parent_penalty=" in clap.fingerprint()


def test_yamnet_tags_a_telephone_bell(clap, sounds):
    wave = clap.load(_file(sounds, "phone-incoming-call.oga"))
    scores = clap.tagger.scores(wave)
    assert scores.shape[1] == 521
    top = [clap.class_names[i] for i in np.argsort(-scores.max(0))[:3]]
    assert {"Telephone", "Telephone bell ringing"} & set(top)


def test_zero_shot_top_labels(clap, sounds):
    from mats.zeroshot import zero_shot
    classes = sorted({r["labels"][0] for r in sounds[1]})
    files = {"phone-incoming-call.oga": "telephone", "36-sheep.wav": "sheep",
             "camera-shutter.oga": "camera shutter"}
    res = zero_shot(clap, [_file(sounds, f) for f in files], classes)
    assert [r["label"] for r in res] == list(files.values())
    assert abs(sum(t["score"] for t in res[0]["top_k"]) - 1) < 0.05


def test_unlabelled_sounds_are_disjoint_from_the_labelled_set(tmp_path):
    """The two folders split one package's clips by RULES: no clip in both, none lost."""
    from mats.data.sounds import SoundsError, fetch_unlabelled_sounds

    pkg = ("sound-theme-freedesktop",)  # 0.4 MB
    try:
        labelled = fetch_real_sounds(tmp_path / "labelled", packages=pkg)
        unlabelled = fetch_unlabelled_sounds(tmp_path / "unlabelled", packages=pkg)
    except Exception as e:
        require(False, f"sound package unavailable: {e}")
    import json
    rows = [json.loads(line) for line in (unlabelled / "sources.jsonl").read_text().splitlines()]
    assert rows and not (unlabelled / "metadata.jsonl").exists()
    assert all("labels" not in r and (unlabelled / r["file"]).is_file() for r in rows)
    names = {r["file"] for r in rows}
    labelled_names = {r["file"] for r in read_metadata(labelled)}
    assert labelled_names and not names & labelled_names
    on_disk = {str(p.relative_to(d)) for d in (labelled, unlabelled) for p in (d / "clips").rglob("*.oga")}
    assert on_disk == names | labelled_names

    with pytest.raises(SoundsError, match="unknown sound package 'nope'"):
        fetch_unlabelled_sounds(tmp_path / "bad", packages=("nope",))
    assert not (tmp_path / "bad").exists()
