"""The config schema: typed dataclasses, validated once, errors that name the key."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from detector.errors import ConfigError
from detector.schema import apply_overrides, expand_env, from_dict, load_yaml, to_dict


@dataclass
class Inner:
    rate: float = 1.0
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    limit: Optional[int] = None


def test_builds_nested_dataclasses_and_converts_ints_to_floats():
    cfg = from_dict(Outer, {"name": "x", "inner": {"rate": 2}, "sizes": [3]})
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.sizes == [3] and cfg.limit is None


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "inner": {"rte": 1}}, "inner.rte: unknown key"),
    ({"name": "x", "inner": {"rate": "fast"}}, "inner.rate: expected float"),
    ({"name": "x", "inner": {"mode": "c"}}, "inner.mode: must be one of"),
    ({"name": "x", "sizes": [1, "2"]}, "sizes[1]: expected int"),
    ({"name": "x", "limit": True}, "limit: expected int"),
    ({}, "name: required key is missing"),
])
def test_rejects_bad_input_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(Outer, data)


def test_overrides_parse_values_as_yaml():
    data = apply_overrides({"loss": {"giou": 2.0}}, ["loss.giou=0", "train.device=cpu"])
    assert data == {"loss": {"giou": 0}, "train": {"device": "cpu"}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["loss.giou"])


@dataclass
class Switch:
    amp: Literal["auto", "on", "off"] = "auto"


def test_yaml_booleans_mean_the_on_off_choice_they_spell():
    # YAML 1.1 reads `amp: off` (and `--set train.amp=off`) as False: that means "off".
    data = apply_overrides({}, ["amp=off"])
    assert data == {"amp": False} and from_dict(Switch, data).amp == "off"
    assert from_dict(Switch, {"amp": True}).amp == "on"
    # Where no choice spells on/off, a boolean is still refused, naming the key.
    with pytest.raises(ConfigError, match="mode: must be one of 'a', 'b', got False"):
        from_dict(Inner, {"mode": False})


def test_env_expansion_names_the_missing_variable():
    assert expand_env({"url": "rtsp://u:${PW}@h/"}, environ={"PW": "s3"}) == {"url": "rtsp://u:s3@h/"}
    with pytest.raises(ConfigError, match=r"cameras\[0\].url: environment variable \$\{PW\}"):
        expand_env({"cameras": [{"url": "${PW}"}]}, environ={})


def test_yaml_python_tags_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_yaml(bad)
    assert not (tmp_path / "pwned").exists()


def test_round_trip_through_plain_data():
    cfg = from_dict(Outer, {"name": "x", "limit": 3})
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_float_fields_accept_exponents_yaml_reads_as_strings():
    # PyYAML reads `1e-3` (no dot) as the string "1e-3".
    assert from_dict(Inner, {"rate": "1e-3"}).rate == 0.001
    with pytest.raises(ConfigError, match="inner.rate: expected float"):
        from_dict(Outer, {"name": "x", "inner": {"rate": "1e-3x"}})
