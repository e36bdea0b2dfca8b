"""The config documentation has one source, the field metadata of engine.config: every field has a help,
the README's reference is generated from it, and the dashboard's config forms show it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib

import pytest

from dashboard.config_form import field_choices, field_help
from engine import config as config_module
from engine.config import CampaignConfig, ConfigError, GatesConfig, StopConfig, config_from_dict
from engine.config_doc import README, config_reference_markdown, readme_section, sections, with_reference

CONFIG_CLASSES = [
    obj
    for _, obj in inspect.getmembers(config_module, inspect.isclass)
    if dataclasses.is_dataclass(obj) and obj.__module__ == config_module.__name__
]
ALL_FIELDS = [(cls, f) for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)]


def test_every_config_dataclass_is_reachable_from_campaign_config():
    assert {cls for _, _, cls, _ in sections()} == set(CONFIG_CLASSES)


@pytest.mark.parametrize("cls, f", ALL_FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in ALL_FIELDS])
def test_every_field_has_a_help(cls, f):
    help_ = f.metadata.get("help", "")
    assert isinstance(help_, str) and len(help_.strip()) >= 20, f"{cls.__name__}.{f.name} has no help"
    assert "\n" not in help_


def test_the_reference_lists_every_plain_field_with_its_dotted_path():
    doc = config_reference_markdown()
    rows = re.findall(r"^\| `([\w.]+)` \|", doc, flags=re.M)
    expected = [f"{p}.{f.name}" if p else f.name for p, _, _, fields in sections() for f in fields]
    assert rows == expected
    assert len(rows) == len(set(rows))
    assert "| `grow.temperature` | float | `0.8` |" in doc
    assert "| `improve.thresholds` | list[float] | `[0.0, 0.7, 0.8, 0.9, 0.95, 0.99]` |" in doc
    assert "| `stop.target_reward` | float | not set |" in doc
    assert '| `policy.prompt_template` | str | `"{source} => "` |' in doc
    assert "### `[policy.scratch]`" in doc and "### `[gates]`" in doc


def test_readme_reference_is_the_generated_one():
    """Run `python -m engine.config_doc` after changing a field of engine/config.py."""
    text = README.read_text(encoding="utf-8")
    assert readme_section(text) == config_reference_markdown()
    assert with_reference(text) == text


def test_with_reference_replaces_only_between_the_markers():
    text = (
        "# T\n\nbefore\n<!-- config-reference:start -->\nSTALE-TEXT\n<!-- config-reference:end -->\nafter\n"
    )
    new = with_reference(text)
    assert new.startswith("# T\n\nbefore\n<!-- config-reference:start -->\n")
    assert new.endswith("<!-- config-reference:end -->\nafter\n")
    assert "STALE-TEXT" not in new and readme_section(new) == config_reference_markdown()
    with pytest.raises(ValueError):
        with_reference("no markers here")


def test_readme_example_toml_is_a_valid_config():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Campaign config") : text.index("<!-- config-reference:start -->")]
    (example,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    cfg = config_from_dict(tomllib.loads(example))
    assert isinstance(cfg, CampaignConfig)


@pytest.mark.parametrize("cls, f", ALL_FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in ALL_FIELDS])
def test_form_help_is_the_field_metadata(cls, f):
    assert field_help(cls, f.name) == f.metadata["help"]


def test_choices_are_what_the_validation_accepts():
    assert field_choices(GatesConfig, "action") == ["pause", "stop"]
    assert field_choices(StopConfig, "max_grow_steps") is None
    for path, _, cls, fields in sections():
        for f in fields:
            opts = field_choices(cls, f.name)
            if opts is None:
                continue
            dotted = f"{path}.{f.name}" if path else f.name
            for value in opts:  # every listed value is accepted ...
                _config_with(dotted, value)
            with pytest.raises(ConfigError) as info:  # ... and one not listed is refused, naming the field
                _config_with(dotted, "not-a-choice")
            assert info.value.field == dotted


def _config_with(dotted: str, value: object) -> CampaignConfig:
    raw: dict = {"data": {"train": "t.jsonl", "validation": "v.jsonl"}}
    if dotted == "reward.kind" and value in ("hf", "minilm"):
        raw["reward"] = {"path": "head"}
    if dotted == "reward.kind" and value == "callable":
        raw["reward"] = {"function": "m:f"}
    *tables, key = dotted.split(".")
    if tables == ["audit"]:  # an array of tables: one [[audit]] entry
        entry = {"path": "model"} if value in ("hf", "minilm") else {}
        entry |= {"function": "m:f"} if value == "callable" else {}
        raw["audit"] = [entry | {key: value}]
        return config_from_dict(raw)
    node = raw
    for t in tables:
        node = node.setdefault(t, {})
    node[key] = value
    return config_from_dict(raw)


def test_stop_and_gates_forms_show_the_field_help():
    """The rendered widgets carry the metadata help (and a select box for fields with choices)."""
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from dashboard.config_form import dataclass_form
        from engine.config import GatesConfig, StopConfig

        for cls, section in ((StopConfig, "stop"), (GatesConfig, "gates")):
            with st.form(f"form_{section}"):
                dataclass_form(cls, {}, section, section, None, disabled=False)
                st.form_submit_button("Save")

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    widgets = {
        w.key: w
        for kind in ("number_input", "text_input", "checkbox", "selectbox")
        for w in getattr(at, kind)
    }
    for cls, section in ((StopConfig, "stop"), (GatesConfig, "gates")):
        for f in dataclasses.fields(cls):
            w = widgets[f"{section}_{f.name}"]
            assert w.help == f.metadata["help"], f"{section}.{f.name}"
    assert widgets["gates_action"].options == ["pause", "stop"]
