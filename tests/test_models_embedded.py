import json

import pytest

from privtune.cli import main
from privtune.errors import ConfigError, ModelLoadError
from privtune.models import embedded
from privtune.models.loading import load_model


def test_tiny_embedded_builds_once_and_is_reused():
    res = embedded.build_embedded("tiny")
    assert res.built and res.path.is_dir() and res.heldout_loss > 0 and res.params > 0
    again = embedded.build_embedded("tiny")
    assert not again.built and again.path == res.path and again.heldout_loss == res.heldout_loss
    info = json.loads((res.path / embedded.BUILD_FILE).read_text())
    assert info["config"]["layers"] == embedded.SIZES["tiny"].layers
    lm = load_model("embedded:tiny")
    assert lm.arch == "gpt_neox" and lm.tokenizer("My name is").input_ids[0] == lm.tokenizer.bos_token_id
    # pre-training learned something: held-out loss well below the uniform-guess loss log(vocab)
    import math
    assert res.heldout_loss < math.log(len(lm.tokenizer)) - 0.5


def test_cache_key_covers_config_and_generators(monkeypatch):
    k = embedded.cache_key("tiny")
    assert k == embedded.cache_key("tiny") and k != embedded.cache_key("default")
    monkeypatch.setattr(embedded, "_generator_fingerprint", lambda: "changed")
    assert embedded.cache_key("tiny") != k


def test_unknown_size_and_unbuilt_model():
    with pytest.raises(ConfigError, match="embedded size"):
        embedded.size_config("huge")
    with pytest.raises(ModelLoadError, match="privtune model build"):
        embedded.embedded_path("default", build=False)


def test_model_cli_build_and_info(capsys):
    main(["model", "build", "--size", "tiny", "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rec["size"] == "tiny"
    main(["model", "info", "tiny:qwen2", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "qwen2" and "q_proj" in info["lora_targets"]
