import os

import pytest

# Tests are deterministic and quiet; keep torch to one thread per xdist worker on small CI machines.
os.environ.setdefault("PRIVTUNE_PROGRESS", "0")
# one BLAS/OpenMP thread per xdist worker: `make test` runs two workers on two cores
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own privtune cache unless PRIVTUNE_TEST_CACHE points at a shared one."""
    shared = os.environ.get("PRIVTUNE_TEST_CACHE")
    monkeypatch.setenv("PRIVTUNE_CACHE", shared or str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `ray` need the optional Ray package (`make test-ray` installs it); skip them only when Ray itself
    is missing, never for a missing privtune module."""
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        return
    skip = pytest.mark.skip(reason="needs Ray (pip install 'privtune[ray]'; make test-ray)")
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(skip)
