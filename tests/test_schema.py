"""`nncli schema`: the JSON Schema of config files, checked with the jsonschema package (not ours).

- it is a valid draft 2020-12 schema;
- every shipped config and every README YAML example validates against it;
- configs of the bad-input table that the validator rejects for their keys, types, ranges or
  names are rejected by the schema too;
- the schema's key paths equal the key paths declared in the code (no drift).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from support import CONFIGS, ROOT
from test_bad_inputs import BAD_CONFIGS, GOOD

from nncli import spec as spec_mod
from nncli.cli import main
from nncli.layers import LAYERS
from nncli.optimizers import CLIP_KEYS, OPTIMIZERS
from nncli import regularization, schedules, tensorboard
from nncli.schema import mapping
from nncli.sweep import spec as sweep_spec


@pytest.fixture(scope="module")
def schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    return doc


@pytest.fixture(scope="module")
def validator(schema):
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, data):
    return [e.message for e in validator.iter_errors(data)]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(validator, path):
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


def _readme_yaml_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_every_readme_yaml_example_validates(validator):
    blocks = _readme_yaml_blocks()
    assert len(blocks) >= 3
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "base" in data and "parameters" in data:  # a sweep file (README "Sweeps")
            mapping(data, "", sweep_spec.top_keys(), "mapping of sweep keys")  # raises Invalid if wrong
            checked += 1
        elif isinstance(data, dict) and "layers" in data and "data" in data:  # a whole config
            assert _errors(validator, data) == [], block
            checked += 1
        else:  # a fragment of top-level keys: checked with a minimal config around it
            base = {"data": {"train": "x.csv"}, "layers": [{"type": "dense", "units": 1}]}
            assert isinstance(data, dict), block
            assert _errors(validator, {**base, **data}) == [], block
            checked += 1
    assert checked == len(blocks)


def test_init_templates_validate(validator):
    from nncli import configtool

    for name in configtool.TEMPLATES:
        assert _errors(validator, yaml.safe_load(configtool.template(name))) == [], name


# Cases of tests/test_bad_inputs.py's table that are about keys, types, ranges and names (what a
# schema can say). The others (missing files, shapes, classes, duplicate keys, YAML syntax,
# monitors that need the metric list) are left to `nncli config --check` and training.
SCHEMA_CASES = [
    "unknown top key", "epochs not int", "epochs zero", "negative lr", "lr is text", "unknown layer type",
    "unknown activation", "unknown loss", "unknown optimizer", "units missing", "units negative",
    "unknown layer key", "layers empty", "layers not list", "layer not mapping", "missing data",
    "bad data suffix", "validation out of range", "normalize choice", "device choice", "batch size text",
    "steps per execution zero", "steps per execution word", "adam beta out of range", "top level not mapping",
]


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_known_bad_configs_are_rejected(validator, tmp_path, case):
    (text,) = [c[1] for c in BAD_CONFIGS if c[0] == case]
    text = text.replace("{train}", "data.csv")
    (tmp_path / "data.csv").write_text("a,b,y\n0,1,0\n1,0,1\n")
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(Exception):  # the validator rejects it (the reference: nncli's own loader)
        spec_mod.load(config)
    assert _errors(validator, yaml.safe_load(text)), f"the schema accepts the bad config {case!r}"


def test_at_least_twenty_bad_cases():
    assert len(SCHEMA_CASES) >= 20 and set(SCHEMA_CASES) <= {c[0] for c in BAD_CONFIGS}


def test_the_good_config_of_the_table_validates(validator):
    assert _errors(validator, yaml.safe_load(GOOD.replace("{train}", "data.csv"))) == []


def test_unknown_keys_are_rejected_everywhere(validator):
    base = {"data": {"train": "x.csv"}, "layers": [{"type": "dense", "units": 1}]}
    assert _errors(validator, base) == []
    for bad in ({**base, "data": {"train": "x.csv", "trian": "y.csv"}},
                {**base, "layers": [{"type": "dense", "units": 1, "filters": 3}]},   # conv2d's key on dense
                {**base, "layers": [{"type": "dropout", "rate": 0.2, "units": 3}]},
                {**base, "optimizer": {"type": "sgd", "beta_1": 0.9}},               # adam's key on sgd
                {**base, "schedule": {"type": "step", "period": 3}},
                {**base, "early_stopping": {"patience": 3, "paitence": 4}},
                {**base, "clip": {"norm": 1.0, "max": 2}},
                {**base, "regularization": {"l2": 0.1, "layers": {"dense_1": {"l3": 1}}}}):
        assert _errors(validator, bad), bad


def _declared_paths() -> set[str]:
    """Every key path the code declares, walked from the declarations (not from the schema)."""
    out: set[str] = set()

    def keys(prefix, declared):
        for name in declared:
            out.add(f"{prefix}.{name}" if prefix else name)

    top = spec_mod.top_keys(Path("."))
    keys("", top)
    keys("data", spec_mod.data_keys(Path(".")))
    keys("early_stopping", spec_mod.EARLY_STOPPING_KEYS)
    keys("clip", CLIP_KEYS)
    keys("tensorboard", tensorboard.KEYS)
    keys("regularization", regularization.KEYS)
    keys("regularization.layers.*", {"l1": 0, "l2": 0})
    for name in OPTIMIZERS.names():
        keys(f"optimizer.{name}", {"type": 0, **OPTIMIZERS.get(name).keys})
    for name in schedules.SCHEDULES.names():
        keys(f"schedule.{name}", {"type": 0, **schedules.COMMON_KEYS, **schedules.SCHEDULES.get(name).keys})
    for name in LAYERS.names():
        keys(f"layers[].{name}", {"type": 0, "name": 0, "inputs": 0, **LAYERS.get(name).keys})
    keys("metrics[]", {"type": 0, "k": 0})
    from nncli.data.columns import COLUMN_TYPES
    for name in COLUMN_TYPES.names():
        keys(f"data.columns.*.{name}", {"type": 0, **COLUMN_TYPES.get(name).keys})
    return out


def test_schema_keys_equal_the_declared_keys(schema):
    from nncli import schema_export

    assert schema_export.property_paths(schema) == _declared_paths()


def test_enums_come_from_the_registries(schema):
    from nncli.activations import ACTIVATIONS
    from nncli.losses import LOSSES

    props = schema["properties"]
    assert props["loss"]["anyOf"][0]["enum"] == LOSSES.names()
    dense = next(b for b in props["layers"]["items"]["oneOf"] if b["title"] == "dense")
    assert dense["properties"]["activation"]["enum"] == ACTIVATIONS.names()
    assert dense["additionalProperties"] is False and dense["required"] == ["type", "units"]
    assert {b["title"] for b in props["layers"]["items"]["oneOf"]} == set(LAYERS.names())
    assert props["epochs"]["default"] == 10 and props["epochs"]["minimum"] == 1
