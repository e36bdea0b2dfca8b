"""A form generated from a config dataclass (engine.config.StopConfig, GatesConfig): a new field appears here.

Each widget's help and choices come from the field's metadata in engine.config, where every field is
documented once. Values go back through engine.config's own validation; every error is shown under the field
it names (`section_errors` collects them all at once).
"""

from __future__ import annotations

import dataclasses
import re
import typing

import streamlit as st


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def field_help(cls: type, name: str) -> str:
    """The widget help of field `name` of config dataclass `cls`: its documented help in engine.config."""
    return _field(cls, name).metadata.get("help", "")


def field_choices(cls: type, name: str) -> list[str] | None:
    """The allowed values of a field that has a fixed set (shown as a select box), else None."""
    return _field(cls, name).metadata.get("choices")


def _base(tp) -> tuple[type, bool]:
    """(inner type, optional) of a field annotation such as `float | None`."""
    args = typing.get_args(tp)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _parse(tp, raw):
    """A text widget's value as the field's type: comma-separated lists, empty text as "not set"."""
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        items = [x.strip() for x in str(raw or "").split(",") if x.strip()]
        try:
            return [inner(x) for x in items]
        except ValueError:
            return items  # the config's own check names the field
    return raw if raw not in ("", None) else None


def form_values(cls: type, prefix: str) -> dict:
    """The submitted values of a dataclass_form, read from session state (for an on_click callback)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, _ = _base(hints[f.name])
        raw = st.session_state[f"{prefix}_{f.name}"]
        chosen = field_choices(cls, f.name) is not None
        out[f.name] = raw if tp in (bool, int, float) or chosen else _parse(tp, raw)
    return out


def dataclass_form(
    cls: type, current: dict, prefix: str, section: str, err: dict | list[dict] | None, disabled: bool
) -> dict:
    """Draw one widget per field of `cls` inside the caller's st.form; return {field: value}. `err`: the
    validation errors ({field, message}, one or a list), each shown under the field it names."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, optional = _base(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        value = current.get(f.name, default)
        key, label, help_ = f"{prefix}_{f.name}", f.name, field_help(cls, f.name)
        opts = field_choices(cls, f.name)
        if opts is not None:
            out[f.name] = st.selectbox(
                label,
                opts,
                index=opts.index(value) if value in opts else 0,
                key=key,
                help=help_,
                disabled=disabled,
            )
        elif typing.get_origin(tp) is list:  # comma-separated
            text = st.text_input(
                label, value=", ".join(map(str, value or [])), key=key, help=help_, disabled=disabled
            )
            out[f.name] = _parse(tp, text)
        elif tp is bool:
            out[f.name] = st.checkbox(label, value=bool(value), key=key, help=help_, disabled=disabled)
        elif tp is int:
            out[f.name] = st.number_input(
                label,
                value=value,
                step=1,
                key=key,
                help=help_,
                disabled=disabled,
                placeholder="not set" if optional else None,
            )
        elif tp is float:
            out[f.name] = st.number_input(
                label,
                value=None if value is None else float(value),
                step=0.01,
                format="%.4f",
                key=key,
                help=help_,
                disabled=disabled,
                placeholder="not set" if optional else None,
            )
        else:  # strings and anything newer: shown as text, parsed by the config's own checks
            out[f.name] = _parse(
                tp,
                st.text_input(
                    label, value="" if value is None else str(value), key=key, help=help_, disabled=disabled
                ),
            )
        for e in [err] if isinstance(err, dict) else err or []:
            if re.sub(r"\[\d+\]$", "", e["field"]) == f"{section}.{f.name}":
                st.error(e["message"], icon=":material/error:")
    return out


def section_errors(config: dict, section: str, values: dict) -> list[dict]:
    """Every validation error of table `section` once `values` replace it in `config` (the stored,
    validated campaign config), as {field, message}; [] when the table is valid."""
    from engine.config import config_errors

    table = {k: v for k, v in values.items() if v is not None}  # a field left empty is "not set"
    errors = config_errors(config | {section: table})
    return [
        {"field": e.field, "message": f"{e.field} = {e.value!r}: {e.allowed}"}
        for e in errors
        if e.field == section or e.field.startswith(f"{section}.")
    ]
