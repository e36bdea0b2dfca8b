"""The server process's settings (`--db`, `--local`) and its controller, one per database file.

The dashboard's server process is the controller: every session and page gets the same ControllerService
(kept in st.cache_resource), which owns the DuckDB file and runs campaigns in background threads.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import streamlit as st

from engine.cli.common import DEFAULT_DB, add_db_argument
from engine.controller_service import ControllerService


@dataclass(frozen=True)
class Settings:
    db: str
    local: bool


def settings() -> Settings:
    """`streamlit run dashboard/app.py -- --db PATH --local`, or env RESTGOV_DB / RESTGOV_LOCAL=1."""
    p = argparse.ArgumentParser(add_help=False)
    add_db_argument(p, None)
    p.add_argument("--local", action="store_true")
    a, _ = p.parse_known_args(sys.argv[1:])
    db = a.db or os.environ.get("RESTGOV_DB", DEFAULT_DB)  # read now: the environment may be set after import
    local = a.local or os.environ.get("RESTGOV_LOCAL", "") in ("1", "true", "yes")
    return Settings(db=db, local=local)


@st.cache_resource(show_spinner="Opening the store ...")
def _service(db: str) -> ControllerService:
    return ControllerService(db)


def service() -> ControllerService:
    """The server process's controller and store (one per database file, shared by all sessions)."""
    return _service(settings().db)
