"""The three ways to create a campaign: a demo recipe, an uploaded TOML, or a form with the main fields.

A bad value is reported by engine.config as a ConfigError naming the field; it is shown under that field
(form) or with the offending TOML line (upload). Data problems (engine.data.DataError) go under the data
paths.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import streamlit as st

from engine.config import FILTER_RULES, REWARD_KINDS, ConfigError, config_errors, config_from_dict
from engine.data import DataError

RECIPES = {
    "arith": "ReST-EM on arithmetic word problems, numeric verifier (binary reward)",
    "toy-mt": "ReST on a synthetic translation task, learned MiniLM reward",
    "reward-hack": "toy-mt with a learned reward that pays for length: reward up, chrF down",
}
BUDGETS = {
    "tiny": "tiny: a smoke test of the loop (1 Grow, K = 2, 5 optimizer steps), not a result",
    "small": "small: a smaller data set and budget",
    "full": "full: the recipe as written",
}
# Wall time per Grow step measured with `restgov demo` (bench/RESULTS.md: the whole run over its Grow steps,
# bootstrap and final evaluation included) on a 2-vCPU AMD EPYC machine, CPU only:
# (Grow steps, per Grow on a quiet machine, per Grow on a loaded one).
MACHINE = "2-vCPU AMD EPYC machine (CPU only)"
MEASURED = {
    ("arith", "small"): (1, "2 min 45 s", "quiet", None),
    ("arith", "full"): (2, "1 min 55 s", "quiet", "15 min 40 s per Grow at load average 5-8"),
    ("toy-mt", "full"): (2, "2 min 10 s", "quiet", "12 min 15 s per Grow at load average 5-8"),
    ("reward-hack", "small"): (2, "1 min 30 s", "load average 4", None),
}
LOADED = "a loaded machine took 6-8x as long (load average 5-8)"


def budget_label(recipe: str, budget: str) -> str:
    """The budget's description with the measured wall time per Grow step of that recipe, and the machine."""
    base = BUDGETS[budget]
    if budget == "tiny":
        return base
    m = MEASURED.get((recipe, budget))
    if m is None:
        return f"{base}; not measured for {recipe}: see bench/RESULTS.md"
    grows, per, load, loaded = m
    return (
        f"{base}: {grows} Grow{'s' if grows > 1 else ''}, measured {per} per Grow on a {MACHINE}, {load}; "
        f"{loaded or LOADED}"
    )


def _errors_for(field: str, errors) -> list[dict]:
    """The stored validation errors that name `field` (or an item of it)."""
    if isinstance(errors, dict):
        errors = [errors]
    return [e for e in errors or [] if e["field"] == field or re.sub(r"\[\d+\]$", "", e["field"]) == field]


def _error(field: str, errors) -> None:
    """The stored validation errors, under the widget of the field they name (or of its parent)."""
    for e in _errors_for(field, errors):
        st.error(e["message"], icon=":material/error:")


def _created(svc, cid: str, user: dict, start: bool) -> None:
    if start:
        svc.start(cid, user["name"])
    st.session_state.cid = cid
    st.session_state.created = f"Created campaign {cid}" + (" and started it." if start else ".")


def recipe_tab(svc, user: dict) -> None:
    name = st.selectbox(
        "Demo recipe", list(RECIPES), key="new_recipe", format_func=lambda k: f"{k}: {RECIPES[k]}"
    )
    budget = st.radio(
        "Budget",
        list(BUDGETS),
        key="new_budget",
        format_func=lambda b: budget_label(name, b),
        horizontal=False,
    )
    start = st.checkbox("Start it now", value=True, key="new_recipe_start")
    if st.button("Launch recipe", key="new_recipe_go", type="primary", icon=":material/play_arrow:"):
        svc.launch_recipe(name, budget, user["name"], start=start)
    for job in svc.jobs()[:3]:
        text = f"Recipe {job['recipe']} ({job['budget']}): {job['status']}" + (
            f", campaign {job['cid']}" if job["cid"] else ""
        )
        (st.error if job["error"] else st.caption)(text + (f": {job['error']}" if job["error"] else ""))


def locate(text: str, field: str) -> int | None:
    """1-based line of a dotted field (`grow.temperature`, `improve.thresholds[1]`) in a TOML text, if
    found."""
    parts = re.sub(r"\[\d+\]$", "", field).split(".")
    table, key = ".".join(parts[:-1]), parts[-1]
    current = ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\s*([^\]]+?)\s*\]", s):
            current = m.group(1)
        elif current == table and re.match(rf"{re.escape(key)}\s*=", s):
            return i
    return None


def upload_tab(svc, user: dict) -> None:
    up = st.file_uploader("Campaign TOML", type=["toml"], key="new_toml")
    base = st.text_input(
        "Folder that relative data paths resolve against", value=os.getcwd(), key="new_toml_base"
    )
    start = st.checkbox("Start it now", value=False, key="new_toml_start")
    if up is None or not st.button("Validate and create", key="new_toml_go", type="primary"):
        return
    text = up.getvalue().decode("utf-8", errors="replace")
    try:
        cfg = config_from_dict(tomllib.loads(text), base_dir=Path(base))
        _created(svc, svc.create(cfg, user["name"]), user, start)
        st.rerun()
    except tomllib.TOMLDecodeError as e:
        st.error(f"{up.name} is not valid TOML: {e}", icon=":material/error:")
    except ConfigError as e:
        line = locate(text, e.field)
        where = f" (line {line})" if line else ""
        st.error(f"**{e.field}**{where} = `{e.value!r}`: {e.allowed}", icon=":material/error:")
        if line:
            lines = text.splitlines()
            st.code(
                "\n".join(
                    f"{'→' if n == line else ' '} {n:>3} {lines[n - 1]}"
                    for n in range(max(1, line - 2), min(len(lines), line + 2) + 1)
                ),
                language=None,
            )
    except DataError as e:
        st.error(f"Data problem: {e}", icon=":material/error:")


# The form's fields: (dotted config path, label, widget, default or choices). Empty text fields are left out.
FORM = [
    ("name", "Name", "text", "my-campaign"),
    ("mode", "Mode", "select", ["rest", "rest-em"]),
    ("data.train", "Training data (.jsonl, .csv or .parquet)", "text", ""),
    ("data.validation", "Validation data", "text", ""),
    ("data.test", "Test data (optional)", "text", ""),
    ("policy.path", "Policy directory (empty: train a tiny GPT-2 from scratch)", "text", ""),
    ("reward.kind", "Reward", "select", sorted(REWARD_KINDS, key=lambda k: k != "exact_match")),
    ("reward.path", "Reward model directory (hf, minilm)", "text", ""),
    ("reward.function", "Reward function module:function (callable)", "text", ""),
    ("grow.samples_per_source", "Samples per source (K)", "int", 8),
    ("grow.temperature", "Temperature", "float", 0.8),
    ("improve.rule", "Filter rule", "select", ["(mode default)", *FILTER_RULES]),
    ("improve.thresholds", "Thresholds (comma-separated)", "text", "0.0, 0.7, 0.8, 0.9, 0.95, 0.99"),
    ("stop.max_grow_steps", "Max Grow steps", "int", 2),
]


def _raw_from_form() -> tuple[dict, list[dict]]:
    """The form's fields as a config document, and the errors of fields that cannot even be parsed."""
    raw: dict = {"policy": {"scratch": {}}}
    errors = []
    for path, _, kind, _ in FORM:
        v = st.session_state[f"form_{path}"]
        if path == "name" and not str(v).strip():
            errors.append(
                {"field": "name", "message": "name is empty: give the campaign a name (shown in every list)"}
            )
            continue
        if kind == "text" and not str(v).strip() or v == "(mode default)":
            continue
        if path == "improve.thresholds":
            try:
                v = [float(x) for x in str(v).replace(";", ",").split(",") if x.strip()]
            except ValueError:
                errors.append(
                    {"field": path, "message": f"{path} = {v!r}: comma-separated numbers, e.g. 0.7, 0.8, 0.9"}
                )
                continue
        if path == "policy.path":
            raw["policy"] = {}
        *tables, key = path.split(".")
        node = raw
        for t in tables:
            node = node.setdefault(t, {})
        node[key] = v.strip() if isinstance(v, str) else v
    return raw, errors


def _submit_form(svc, user: dict) -> None:
    """on_click: validate before the rerun, so the errors are known when the fields are drawn. Every field's
    error is collected (engine.config.config_errors), not only the first."""
    st.session_state.form_error = None
    raw, errors = _raw_from_form()
    base = Path(st.session_state.form_base)
    errors += [
        {"field": e.field, "message": f"{e.field} = {e.value!r}: {e.allowed}"}
        for e in config_errors(raw, base_dir=base)
        if e.field not in {x["field"] for x in errors}
    ]
    if errors:
        st.session_state.form_error = errors
        return
    try:
        cfg = config_from_dict(raw, base_dir=base)
        _created(svc, svc.create(cfg, user["name"]), user, st.session_state.form_start)
    except ConfigError as e:
        st.session_state.form_error = [{"field": e.field, "message": f"{e.field} = {e.value!r}: {e.allowed}"}]
    except DataError as e:
        field = next(
            (f"data.{s}" for s in ("train", "validation", "test") if str(e).find(s) >= 0), "data.train"
        )
        st.session_state.form_error = [{"field": field, "message": f"Data problem: {e}"}]


def form_tab(svc, user: dict) -> None:
    err = st.session_state.get("form_error")
    with st.form("new_form"):
        for path, label, kind, default in FORM:
            key = f"form_{path}"
            if kind == "text":
                st.text_input(label, value=default, key=key)
            elif kind == "select":
                st.selectbox(label, default, key=key)
            elif kind == "int":
                st.number_input(label, value=default, step=1, key=key)
            else:
                st.number_input(label, value=default, step=0.05, format="%.3f", key=key)
            _error(path, err)
        st.text_input("Folder that relative data paths resolve against", value=os.getcwd(), key="form_base")
        st.checkbox("Start it now", value=False, key="form_start")
        st.form_submit_button("Create campaign", type="primary", on_click=_submit_form, args=(svc, user))
    if err:
        if len(err) > 1:
            st.error(
                f"{len(err)} fields need a change: each error is under its field.", icon=":material/error:"
            )
        for e in err:  # errors of fields the form does not show (a default it cannot change, say)
            if not any(e["field"].startswith(p) for p, *_ in FORM):
                st.error(e["message"], icon=":material/error:")
