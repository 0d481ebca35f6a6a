"""Nearest features by decoder cosine: registering a store puts its neighbours in the database,
and a store collected without them has them computed (the blocked computation itself is
checked against a brute force in tests/collect)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from labeler.core.errors import InputError


def brute_force(directions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from labeler.testing import make_tiny_store

    return make_tiny_store(tmp_path_factory.mktemp("nbstore") / "store", n_features=48)


def test_registering_a_store_imports_its_neighbours(repo, tiny_store, tmp_path):
    from labeler.examples.store import FeatureStore

    store = FeatureStore(tiny_store)
    sae_id = repo.catalog.register_store(store)
    want_i, want_v = brute_force(store.decoder_directions().astype(np.float64), 32)
    got = repo.neighbours.of(sae_id, 5, limit=32)
    assert [i for i, _ in got] == want_i[5].tolist()
    np.testing.assert_allclose([v for _, v in got], want_v[5], atol=1e-5)
    assert len(repo.neighbours.of(sae_id, 5)) == 32 and len(repo.neighbours.of(sae_id, 5, limit=3)) == 3
    assert repo.neighbours.of(sae_id, 48) == []  # no such feature

    # a store that carries the file (collect writes it at finalize): its arrays are what is served
    copy = tmp_path / "with-file"
    shutil.copytree(tiny_store, copy)
    from safetensors.numpy import save_file

    indices = np.tile(np.arange(1, 33, dtype=np.int32), (48, 1))
    values = np.tile(np.linspace(0.9, 0.1, 32, dtype=np.float32), (48, 1))
    save_file({"indices": indices, "values": values}, str(copy / "neighbours.safetensors"))
    again = repo.catalog.register_store(FeatureStore(copy))
    assert again == sae_id  # the same SAE: its neighbours are replaced
    assert repo.neighbours.of(sae_id, 0, limit=2) == [(1, pytest.approx(0.9)), (2, pytest.approx(0.8742, abs=1e-3))]


def test_a_store_without_the_file_has_them_computed(repo, tiny_store, tmp_path):
    from labeler.examples.store import FeatureStore

    copy = tmp_path / "without-file"
    shutil.copytree(tiny_store, copy)
    (copy / "neighbours.safetensors").unlink()
    store = FeatureStore(copy)
    indices, values = store.neighbours()
    want_i, want_v = brute_force(store.decoder_directions().astype(np.float64), 32)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(values, want_v, atol=1e-5)
    assert store.neighbours(compute_max_features=10) is None  # too wide to compute on demand


def test_bad_neighbour_arrays_are_refused(repo):
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=4)
    good_i, good_v = np.zeros((4, 2), np.int32), np.zeros((4, 2), np.float32)
    with pytest.raises(InputError, match="one \\[features, N\\] shape"):
        repo.neighbours.import_arrays(sae_id, good_i, good_v[:, :1], n_features=4)
    with pytest.raises(InputError, match="cover 4 features but the SAE has 5"):
        repo.neighbours.import_arrays(sae_id, good_i, good_v, n_features=5)
    with pytest.raises(InputError, match="must lie in 0..3"):
        repo.neighbours.import_arrays(sae_id, good_i + 4, good_v, n_features=4)


def test_a_neuron_basis_has_no_neighbours(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)  # no decoder, no file
    assert repo.neighbours.of(sae_id, 0) == []
