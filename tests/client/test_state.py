"""Client states beyond memory spill to disk and come back unchanged."""

from __future__ import annotations

import numpy as np

from shoal.client.state import ClientStateStore


def test_states_beyond_the_memory_bound_spill_to_disk_and_come_back_unchanged():
    store = ClientStateStore(max_bytes=3 * 800)  # three states of 100 float64s
    states = {str(i): {"c": np.full(100, float(i)), "n": np.array([i])} for i in range(10)}
    for cid, state in states.items():
        store.put(cid, state)
    assert len(store) == 10 and store.spilled >= 6 and all(c in store for c in states)
    for cid, state in states.items():
        got = store.get(cid)
        assert np.array_equal(got["c"], state["c"]) and np.array_equal(got["n"], state["n"])
        got["c"][:] = -1  # a working copy: the stored state does not change
        assert store.get(cid)["c"][0] == float(cid)
    store.put("3", {"c": np.zeros(100)})  # a spilled client's new state replaces the old
    assert np.array_equal(store.get("3")["c"], np.zeros(100)) and "n" not in store.get("3")
    store.put("4", {})  # an empty state forgets the client
    assert "4" not in store and len(store) == 9
    again = ClientStateStore(max_bytes=None)
    again.load_state_dict(store.state_dict())  # checkpoints hold every state, spilled or not
    assert again.spilled == 0 and sorted(again.state_dict()["ids"]) == sorted(store.state_dict()["ids"])
    assert np.array_equal(again.get("9")["c"], states["9"]["c"])


def test_the_spill_folder_goes_with_the_store():
    store = ClientStateStore(max_bytes=0)
    store.put("a", {"x": np.ones(4)})
    store.put("b", {"x": np.ones(4)})
    folder = store._dir
    assert folder is not None and any(folder.iterdir())
    del store
    import gc

    gc.collect()
    assert not folder.exists()


def test_scaffold_with_every_state_spilled_ends_on_the_in_memory_hash(fed_digits, small_mlp):
    import shoal
    from shoal.runtime.backend import InProcessBackend

    hp = shoal.TorchTrainer(lr=0.1, local_epochs=1, batch_size=16)

    def run(max_bytes):
        backend = InProcessBackend(hp, small_mlp, fed_digits, run_seed=1)
        backend.client_states = ClientStateStore(max_bytes=max_bytes)
        sim = shoal.Simulation(
            small_mlp, fed_digits, shoal.Scaffold(clients_per_round=5), hp, seed=1, backend=backend
        )
        for _ in range(4):
            sim.step(4)
        return shoal.model_hash(sim.params), backend.client_states.spilled

    (in_memory, none), (spilled, many) = run(None), run(1)
    assert none == 0 and many > 5 and spilled == in_memory
