"""The fault catalogue (an operator's YAML merged over the shipped defaults, or a complete one): any text or file
loads a catalogue or fails with ``YamlError`` naming the line, never another exception."""

from __future__ import annotations

from typing import get_args

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.events.catalogue.health import RecommendedAction, TaintEffect
from services.health.catalogue.loader import default_catalogue, load_catalogue, parse_catalogue
from services.health.catalogue.model import Catalogue
from services.health.catalogue.yaml_lines import YamlError
from tests.fuzz.strategies import mostly, yaml_scalars, yaml_values

windows = mostly(
    st.sampled_from(["90s", "3m", "24h", "7d"]) | st.integers(1, 10**6),
    st.sampled_from(["0s", "-1m", "999999999999d", "1" + "0" * 30 + "s"]) | st.integers() | yaml_scalars,
)
actions = mostly(st.sampled_from(get_args(RecommendedAction)), yaml_scalars)
small_lists = st.lists(mostly(st.integers(0, 200), st.integers() | yaml_scalars), max_size=3)
spec_fields = {
    "taint": mostly(st.sampled_from([*get_args(TaintEffect), None]), yaml_scalars),
    "scope": mostly(st.sampled_from(["device", "node"]), yaml_scalars),
    "description": st.text(max_size=12),
}
spec = st.fixed_dictionaries({"action": actions}, optional=spec_fields)
xid_entry = st.fixed_dictionaries({"action": actions, "codes": small_lists}, optional=spec_fields)
check_entry = st.fixed_dictionaries(
    {"action": actions, "check": mostly(st.sampled_from(["ecc", "thermal", "my-check", "xid"]), st.text(max_size=8))},
    optional={**spec_fields, "codes": st.lists(st.sampled_from(["a", "b-1", ""]) | st.text(max_size=4), max_size=3)},
)
count_rule = st.fixed_dictionaries(
    {"count": mostly(st.integers(1, 5), st.integers() | yaml_scalars), "window": windows, "action": actions}
)
repeat_rule = st.fixed_dictionaries(
    {"xids": small_lists, "count": mostly(st.integers(2, 5), st.integers()), "window": windows, "action": actions},
    optional={"taint": spec_fields["taint"]},
)
escalation = st.fixed_dictionaries(
    {},
    optional={
        "repeats": st.lists(repeat_rule, max_size=2),
        "spread": st.fixed_dictionaries({"window": windows}),
        "fatal_repeats": count_rule,
        "node_remediations": count_rule,
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "version": mostly(st.just(1), yaml_scalars),
        "dedup_window": windows,
        "unknown_xid": mostly(spec, yaml_values),
        "xids": mostly(st.lists(xid_entry, max_size=3), yaml_values),
        "checks": mostly(st.lists(check_entry, max_size=3), yaml_values),
        "escalation": mostly(escalation, yaml_values),
    },
)
"""Documents shaped like a catalogue, real actions and taints, with odd parts: every check in the loader runs."""
texts = st.one_of(
    mostly(documents, yaml_values).map(yaml.safe_dump),
    st.text(max_size=60),
    st.sampled_from(["? [a]\n: 1", "xids: &x [*x]", "dedup_window: !foo 3", "<<: {a: 1}", "xids: " + "[" * 1000]),
)


def loaded(text: str, base: Catalogue | None) -> Catalogue | None:
    try:
        catalogue = parse_catalogue(text, "faults.yaml", base)
    except YamlError:
        return None
    assert isinstance(catalogue, Catalogue)
    return catalogue


@settings(max_examples=150, deadline=None)
@given(text=texts, over_defaults=st.booleans())
@example(text="a: &x [*x]", over_defaults=True).via("found: an alias to its own list: RecursionError")
@example(text="? [a]\n: 1", over_defaults=True).via("found: a list as a key: TypeError (unhashable)")
@example(text="dedup_window: !foo 3", over_defaults=True).via("found: an unknown tag: PyYAML's ConstructorError")
@example(text="dedup_window: 99999999999999999999", over_defaults=True).via("found: OverflowError from timedelta")
@example(text="xids: " + "[" * 1000 + "]" * 1000, over_defaults=True).via("found: RecursionError in PyYAML's composer")
def test_catalogue_text_loads_or_is_a_yaml_error(text: str, over_defaults: bool) -> None:
    loaded(text, default_catalogue() if over_defaults else None)


@settings(max_examples=30, deadline=None)
@given(content=st.binary(max_size=64) | texts.map(str.encode))
@example(content=b"\xff").via("found: a file that is not UTF-8 escaped as UnicodeDecodeError")
def test_a_catalogue_file_loads_or_is_a_yaml_error(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("catalogue") / "faults.yaml"
    path.write_bytes(content)
    try:
        catalogue = load_catalogue(path)
    except YamlError:
        return
    assert isinstance(catalogue, Catalogue)
