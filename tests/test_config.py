from dataclasses import dataclass, field

import pytest

from core.config import load_config, parse_overrides
from core.errors import ConfigError


@dataclass
class Inner:
    size: int = field(default=256, metadata={"help": "tokens per chunk"})
    overlap: int = field(default=32, metadata={"help": "overlap"})

    def __post_init__(self):
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be < size ({self.size})")


@dataclass
class Outer:
    name: str = "x"
    chunk: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    ratio: float = 0.5


def test_loads_nested_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("# comment\nname: demo\nchunk:\n  size: 128\n")
    cfg = load_config(Outer, p, ["chunk.overlap=16", "tags=[a, b]", "ratio=1"])
    assert cfg.name == "demo"
    assert cfg.chunk.size == 128 and cfg.chunk.overlap == 16
    assert cfg.tags == ["a", "b"]
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("chunk:\n  sise: 12\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*chunk\.sise"):
        load_config(Outer, p)


def test_bad_value_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("chunk:\n  size: lots\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*chunk\.size must be an integer"):
        load_config(Outer, p)


def test_cross_field_check_is_reported(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("chunk:\n  size: 10\n  overlap: 20\n")
    with pytest.raises(ConfigError, match=r"overlap \(20\) must be < size \(10\)"):
        load_config(Outer, p)


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["chunk.size"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_scientific_notation_is_a_number(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ratio: 1e-3\n")  # YAML 1.1 would leave this a string
    assert load_config(Outer, p).ratio == pytest.approx(0.001)
    assert load_config(Outer, None, ["ratio=2e-4"]).ratio == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="ratio must be a number"):
        load_config(Outer, None, ["ratio=lots"])


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from core.io import atomic_write_text

    p = tmp_path / "out.json"
    atomic_write_text(p, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert p.read_text() == "{}"
