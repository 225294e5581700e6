"""Atomic writes leave the whole new file or the whole old one, never a prefix or a stray temporary file."""
import json

import pytest

from model_core.files import atomic_write, atomic_write_bytes, atomic_write_text, sha256_file, sha256_text


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, json.dumps({"v": 1}))

    def broken(p):
        p.write_text('{"v": 2')  # half written, then the writer dies
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_types_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "a.txt", 123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "b.bin", "text")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_durable_writes_and_hashes(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "x.bin", b"abc", durable=True)
    assert path.read_bytes() == b"abc"
    assert sha256_file(path) == sha256_text("abc") == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_suffix_for_writers_that_insist_on_one(tmp_path):
    np = pytest.importorskip("numpy")
    atomic_write(tmp_path / "a.npz", lambda p: np.savez_compressed(p, x=np.arange(3)), suffix=".tmp.npz")
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]
