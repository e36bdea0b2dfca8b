"""A form generated from a config dataclass (engine.config.StopConfig today), so a field added there appears here.

Values go back through engine.config's own validation; an error is shown under the field it names.
"""

from __future__ import annotations

import dataclasses
import typing

import streamlit as st

HELP = {
    "max_grow_steps": "Stop after this many Grow steps.",
    "target_reward": "Stop once the validation reward reaches this (empty: no target).",
    "min_improvement": "Stop when the last `window` Grow steps gained less validation reward than this (empty: off).",
    "window": "Number of Grow steps `min_improvement` looks back over.",
    "max_samples": "Budget: candidates generated over the campaign (empty: no budget).",
    "max_wall_seconds": "Budget: compute seconds of all steps (empty: no budget).",
}


def _base(tp) -> tuple[type, bool]:
    """(inner type, optional) of a field annotation such as `float | None`."""
    args = typing.get_args(tp)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def dataclass_form(cls: type, current: dict, prefix: str, section: str, err: dict | None, disabled: bool) -> dict:
    """Draw one widget per field of `cls` inside the caller's st.form; return {field: value}."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, optional = _base(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        value = current.get(f.name, default)
        key, label, help_ = f"{prefix}_{f.name}", f.name, HELP.get(f.name)
        if tp is bool:
            out[f.name] = st.checkbox(label, value=bool(value), key=key, help=help_, disabled=disabled)
        elif tp is int:
            out[f.name] = st.number_input(label, value=value, step=1, key=key, help=help_, disabled=disabled,
                                          placeholder="not set" if optional else None)
        elif tp is float:
            out[f.name] = st.number_input(label, value=None if value is None else float(value), step=0.01, format="%.4f",
                                          key=key, help=help_, disabled=disabled, placeholder="not set" if optional else None)
        else:  # strings and anything newer: shown as text, parsed by the config's own checks
            out[f.name] = st.text_input(label, value="" if value is None else str(value), key=key, help=help_,
                                        disabled=disabled) or None
        if err and err["field"] == f"{section}.{f.name}":
            st.error(err["message"], icon=":material/error:")
    return out
