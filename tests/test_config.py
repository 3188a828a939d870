"""Layered typed configs: defaults, then a YAML/TOML file, then flags; unknown keys are errors."""

from __future__ import annotations

import pytest

from avaf.extract.config import ExtractConfig
from avaf.shared.config import ConfigError, resolve, to_dict


def test_file_then_flags_override_defaults(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("runtime:\n  batch_size: 8\n  encoders: 3\nclip:\n  model: ViT-L-14\n")
    cfg = resolve(ExtractConfig, f, {"runtime": {"batch_size": 16}, "input": {"annotations": ["a.json"]}})
    assert cfg.runtime.batch_size == 16 and cfg.runtime.encoders == 3  # flag beats file beats default
    assert cfg.clip.model == "ViT-L-14" and cfg.clip.pretrained == "openai"
    assert cfg.input.annotations == ("a.json",)
    assert resolve(ExtractConfig, None, to_dict(cfg)) == cfg  # the saved config rebuilds the same config
    dotted = resolve(ExtractConfig, None, {"runtime.batch_size": 4, "clip.model": None})
    assert dotted.runtime.batch_size == 4 and dotted.clip.model == "ViT-B-32"  # None: a flag not given


def test_toml_files_work_too(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[decode]\nbackend = "pyav"\ntimeout_s = 30\n')
    cfg = resolve(ExtractConfig, f)
    assert cfg.decode.backend == "pyav" and cfg.decode.timeout_s == 30.0


def test_unknown_keys_and_wrong_types_name_the_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("runtime:\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown setting\(s\) runtime.batchsize"):
        resolve(ExtractConfig, f)
    with pytest.raises(ConfigError, match="config: input.limit: expected int, got str"):
        resolve(ExtractConfig, None, {"input": {"limit": "ten"}})
    (tmp_path / "broken.yaml").write_text("runtime: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not a valid yaml config file"):
        resolve(ExtractConfig, tmp_path / "broken.yaml")
