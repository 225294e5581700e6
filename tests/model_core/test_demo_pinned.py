"""The bundled demo's images for fixed seeds, pinned by the sha256 of their pixels.

The hashes were computed with the code before the model_core restructuring
(commit b4862a7); a refactor that changes any pixel fails here. Sampling
changes that are meant to change images update these hashes in the same
commit and say why.
"""
import hashlib

import numpy as np
import pytest

from model_core.pipeline import get_pipeline

PINNED = {
    "pair_ddpm25": "bb1ce79e51c012c96044dd04ab685da3bc13839ac4b6ed17bcdf5ab42410889b",
    "robust_ddim10": "1d62754aba182c5f9fb44fb8cd93b08178865b4011505f87c979adf2fe788c2b",
    "none_ddpm25": "b2c692a4c230125e611706ad7cda7e283d03a99156aab8da64ac4742dbf71876",
}


def pixels_sha256(images) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in images)).hexdigest()


@pytest.fixture(scope="module")
def pipe():
    return get_pipeline("demo", "cpu")


def test_pair_ddpm(pipe):
    pair = pipe.sample_pair([3, 7], [0, 1], None, "25", "ddpm")
    assert pixels_sha256(pair["robust"] + pair["vanilla"]) == PINNED["pair_ddpm25"]


def test_robust_ddim(pipe):
    assert pixels_sha256(pipe.sample([2, 9], [5, 6], "robust", 2.0, "ddim10", "ddim")) == PINNED["robust_ddim10"]


def test_unguided_ddpm(pipe):
    assert pixels_sha256(pipe.sample([4], [11], "none", None, "25", "ddpm")) == PINNED["none_ddpm25"]
