"""A form generated from a config dataclass (engine.config.StopConfig, GatesConfig), so a new field appears here.

Values go back through engine.config's own validation; an error is shown under the field it names.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import streamlit as st

HELP = {
    "max_grow_steps": "Stop after this many Grow steps.",
    "target_reward": "Stop once the validation reward reaches this (empty: no target).",
    "min_improvement": "Stop when the last `window` Grow steps gained less validation reward than this (empty: off).",
    "window": "Number of Grow steps `min_improvement` looks back over.",
    "max_samples": "Budget: candidates generated over the campaign (empty: no budget).",
    "max_wall_seconds": "Budget: compute seconds of all steps (empty: no budget).",
    "action": "What a failing gate does: pause (wait for an operator) or stop (final evaluation, then STOPPED).",
    "reward_tests": "The reward version must pass its unit-test suite before each Grow.",
    "reward_tests_skip": "Suite tests the gate does not apply (comma-separated names).",
    "reward_tests_min_pass_rate": "Pass rate each applied reward test needs.",
    "drift": "Drift alarms (latest Grow vs the BC baseline and vs the previous Grow) must be clear.",
    "drift_reward_wasserstein": "Reward drift alarm: Wasserstein distance over the reference std.",
    "human_min_ratings": "Ratings needed on the latest sampled policy (0: no human gate).",
    "human_min_diff": "Human eval diff (latest policy minus base) must not fall below this (empty: not checked).",
}
CHOICES = {"action": ["pause", "stop"]}


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
        out[f.name] = raw if tp in (bool, int, float) or f.name in CHOICES else _parse(tp, raw)
    return out


def dataclass_form(
    cls: type, current: dict, prefix: str, section: str, err: dict | None, disabled: bool
) -> dict:
    """Draw one widget per field of `cls` inside the caller's st.form; return {field: value}."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, optional = _base(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        value = current.get(f.name, default)
        key, label, help_ = f"{prefix}_{f.name}", f.name, HELP.get(f.name)
        if f.name in CHOICES:
            opts = CHOICES[f.name]
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
        if err and re.sub(r"\[\d+\]$", "", err["field"]) == f"{section}.{f.name}":
            st.error(err["message"], icon=":material/error:")
    return out
