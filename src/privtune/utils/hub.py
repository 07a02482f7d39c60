"""No Hugging Face hub traffic unless the user asked for a download.

``local_files_only=True`` keeps transformers from fetching model files, but not ``huggingface_hub`` from other
requests made on the way (version 2.x fetches an agent registry while building its user agent); without network
those retry for tens of seconds before a cache miss is reported. Inside :func:`hub_offline` the hub library is in
its offline mode (``HF_HUB_OFFLINE``), so a name missing from the local cache fails at once, with no connection
attempted. The flag is read on each request, so setting it for the duration of a load is enough.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def hub_offline(allow_download: bool = False) -> Iterator[None]:
    """Hub offline mode for the block, unless ``allow_download`` (then the environment decides, as usual)."""
    if allow_download:
        yield
        return
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
