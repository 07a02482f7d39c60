"""Where a sweep's runs execute: one file per backend behind the :data:`BACKENDS` registry (``--backend NAME``).

The sweep (:mod:`privtune.experiments.sweep`) decides what runs (resumption, retries), holds the study directory's
lock, writes the results store and shows progress; a backend only places the configurations it is given and
reports back when each starts and ends. ``local`` (the default) runs them in fresh processes on this machine;
``ray`` runs each as a Ray task on a cluster (``pip install 'privtune[ray]'``). Every module of this package that
registers a :class:`Backend` is found automatically.
"""

from __future__ import annotations

import importlib
import pkgutil

from privtune.experiments.backends.base import BACKENDS, Backend, SweepEvents, make_backend

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["BACKENDS", "Backend", "SweepEvents", "make_backend"]
