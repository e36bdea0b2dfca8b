"""Every `restgov` command given a bad path: a missing folder, an existing folder where a file belongs, a file
where a folder belongs, a folder it cannot write in, or a truncated copy of a real store. Each must end with
exactly one `error: ...` line on stderr naming the path, exit status 2, and no traceback.

The commands run in this process through `engine.cli.main` (a subprocess costs seconds of imports); two
end-to-end checks run the console script. One real store with one campaign is built per module.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from conftest import restgov, write_tiny_campaign

from engine.campaign import new_campaign
from engine.cli import main
from engine.cli.common import expected_error_message, run_command
from engine.config import load_config
from engine.store import open_store


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """A real store holding one campaign (data copied, never run), a truncated copy of it, a plain file and a
    folder this process cannot write in."""
    root = tmp_path_factory.mktemp("cli_errors")
    cfg = write_tiny_campaign(root / "arith", grows=1)
    db = root / "db" / "restgov.duckdb"
    store = open_store(db)
    cid = new_campaign(store, load_config(cfg), db.parent / "runs")
    store.close()
    data = db.read_bytes()
    truncated = root / "copies" / "truncated.duckdb"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    afile = root / "notes.txt"
    afile.write_text("a file, not a folder\n")
    ro = root / "read-only"
    ro.mkdir(mode=0o500)
    try:  # root is not stopped by permissions; nobody may create files in /proc
        (ro / "probe").touch()
        (ro / "probe").unlink()
        ro = Path("/proc")
    except PermissionError:
        pass
    yield SimpleNamespace(
        root=root, cfg=cfg, db=db, cid=cid, truncated=truncated, afile=afile, ro=ro, size=len(data)
    )
    if ro != Path("/proc"):
        ro.chmod(0o700)


def call(capsys, *argv, stdin: str = "") -> tuple[int, str, str]:
    """Run `restgov ARGV` in this process: (exit status, stdout, stderr), as the console script would end."""
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # sys.exit("error: ...") prints its message and exits 1
        code = e.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def one_line(res: tuple[int, str, str], path: Path | str, *words: str) -> str:
    code, out, err = res
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ") and str(path) in line, line
    for w in words:
        assert w in line, (w, line)
    return line


@pytest.fixture(autouse=True)
def no_dashboard_server(monkeypatch):
    """`restgov dashboard` replaces this process with the Streamlit server once its store opens: here it
    must fail before that, so reaching the exec fails the test instead."""

    def execve(*a):
        raise AssertionError("restgov dashboard got past its checks and started the server")

    monkeypatch.setattr(os, "execve", execve)


# Every command that opens the store, by the arguments that reach the opening (`{cid}`, `{cfg}`, `{data}`,
# `{tmp}` filled in by `_args`). `creates`: it makes a missing --db folder (run, demo, dashboard).
COMMANDS = {
    "status": (["status"], False),
    "status ID --json": (["status", "{cid}", "--json"], False),
    "export": (["export", "{cid}", "--out", "{tmp}/samples.parquet"], False),
    "resume": (["resume", "{cid}"], False),
    "criteria": (["criteria", "{cid}", "--set", "stop.max_grow_steps=3"], False),
    "ratings create": (["ratings", "create", "{cid}", "--a", "base", "--b", "g1-i1"], False),
    "ratings stats": (["ratings", "stats", "{cid}"], False),
    "drift": (["drift", "{cid}"], False),
    "reward-refresh": (["reward-refresh", "{cid}"], False),
    "reward-test": (["reward-test", "--reward", "chrf", "--data", "{data}", "--only", "empty_output"], False),
    "users add": (["users", "add", "olga", "--role", "operator", "--password-stdin"], False),
    "users list": (["users", "list"], False),
    "users remove": (["users", "remove", "olga"], False),
    "run": (["run", "{cfg}"], True),
    "demo": (["demo", "--data-dir", "{tmp}/demo-data"], True),
    "dashboard": (["dashboard", "--port", "1"], True),
}


def _args(name: str, env: SimpleNamespace, tmp: Path, db: Path) -> list[str]:
    fill = dict(cid=env.cid, cfg=env.cfg, data=env.cfg.parent / "validation.jsonl", tmp=tmp)
    return [a.format(**fill) for a in COMMANDS[name][0]] + ["--db", str(db)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_truncated_store_is_named_damaged(capsys, env, tmp_path, name):
    before = env.truncated.read_bytes()
    res = call(capsys, *_args(name, env, tmp_path, env.truncated), stdin="pw-123456\n")
    one_line(res, env.truncated, "damaged", "truncated")
    assert env.truncated.read_bytes() == before  # nothing was written into it
    assert list(tmp_path.iterdir()) == []  # nor anything else (no export, no recipe data)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_folder_given_as_the_store(capsys, env, tmp_path, name):
    one_line(
        call(capsys, *_args(name, env, tmp_path, env.root), stdin="pw-123456\n"), env.root, "is a folder"
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_store_under_a_file(capsys, env, tmp_path, name):
    db = env.afile / "sub" / "r.duckdb"
    one_line(call(capsys, *_args(name, env, tmp_path, db), stdin="pw-123456\n"), db, f"{env.afile} is a file")


@pytest.mark.parametrize("name", sorted(n for n, (_, creates) in COMMANDS.items() if not creates))
def test_store_in_a_missing_folder(capsys, env, tmp_path, name):
    db = tmp_path / "missing" / "r.duckdb"
    one_line(call(capsys, *_args(name, env, tmp_path, db), stdin="pw-123456\n"), db, "does not exist")
    assert not db.parent.exists()


@pytest.mark.parametrize("name", sorted(n for n, (_, creates) in COMMANDS.items() if creates))
def test_store_folder_that_cannot_be_created(capsys, env, tmp_path, name):
    db = env.ro / "restgov-new" / "r.duckdb"
    one_line(call(capsys, *_args(name, env, tmp_path, db)), db, "cannot create the folder")
    assert not db.parent.exists()


# ---------------------------------------------------------------- paths other than --db


def test_export_out_bad_paths(capsys, env, tmp_path):
    export = ["export", env.cid, "--db", env.db, "--out"]
    cases = [
        (tmp_path / "missing" / "s.parquet", "the folder"),
        (tmp_path, "is a folder"),
        (env.afile / "s.parquet", "is a file, not a folder"),
        (env.ro / "s.parquet", "cannot write there"),
    ]
    for out, words in cases:
        one_line(call(capsys, *export, out), out, words)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the governance record


def test_export_to_a_good_path_still_works(capsys, env, tmp_path):
    out = tmp_path / "s.jsonl"
    code, stdout, err = call(capsys, "export", env.cid, "--db", env.db, "--format", "jsonl", "--out", out)
    assert code == 0 and err == "", err
    assert "wrote 0 samples" in stdout and out.exists()  # the campaign never ran: no samples yet
    assert (tmp_path / "s.governance.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".restgov-check")] == []


def test_healthy_store_still_opens(capsys, env):
    code, out, err = call(capsys, "status", "--db", env.db)
    assert code == 0 and env.cid in out and err == ""


def test_run_config_bad_paths(capsys, env, tmp_path):
    db = tmp_path / "r.duckdb"
    one_line(call(capsys, "run", tmp_path / "none.toml", "--db", db), tmp_path / "none.toml", "no such file")
    one_line(call(capsys, "run", env.cfg.parent, "--db", db), env.cfg.parent, "is a folder")
    one_line(call(capsys, "run", env.afile / "c.toml", "--db", db), env.afile, "is a file")
    assert not db.exists()


def test_demo_data_dir_bad_paths(capsys, env, tmp_path):
    db = tmp_path / "db" / "r.duckdb"
    one_line(call(capsys, "demo", "--data-dir", env.afile, "--db", db), env.afile, "is a file, not a folder")
    one_line(call(capsys, "demo", "--data-dir", env.ro / "d", "--db", db), env.ro / "d", "cannot write")
    assert list(tmp_path.iterdir()) == []  # checked before the store or any recipe file is made


def test_reward_refresh_out_bad_paths(capsys, env, tmp_path):
    refresh = ["reward-refresh", env.cid, "--db", env.db, "--out"]
    one_line(call(capsys, *refresh, tmp_path), tmp_path, "already exists")
    one_line(call(capsys, *refresh, env.afile / "head"), env.afile / "head", "is a file, not a folder")
    one_line(call(capsys, *refresh, env.ro / "head"), env.ro / "head", "cannot write")


def test_reward_test_input_bad_paths(capsys, env, tmp_path):
    base = ["reward-test", "--reward", "chrf", "--data"]
    one_line(call(capsys, *base, tmp_path / "none.jsonl"), tmp_path / "none.jsonl", "no such file")
    missing_cfg = tmp_path / "none.toml"
    res = call(capsys, "reward-test", "--reward-config", missing_cfg, "--data", env.cfg.parent / "test.jsonl")
    one_line(res, missing_cfg, "no such file")


# ---------------------------------------------------------------- the mapping itself


def test_real_duckdb_and_os_errors_map_to_one_line(tmp_path):
    con = duckdb.connect()
    for bad, words in ((tmp_path / "none" / "x.parquet", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(duckdb.IOException) as e:
            con.execute(f"COPY (SELECT 1 AS x) TO '{bad}' (FORMAT parquet)")
        line = expected_error_message(e.value)
        assert str(bad) in line and words in line and "\n" not in line
    with pytest.raises(duckdb.BinderException) as e:  # a bug in a query is not an expected failure
        con.execute("SELECT no_such_column FROM (SELECT 1 AS x)")
    assert expected_error_message(e.value) is None
    with pytest.raises(IsADirectoryError) as e:
        open(tmp_path, "w")
    assert expected_error_message(e.value) == f"{tmp_path}: is a folder: give a file name"


def test_unexpected_errors_keep_their_traceback(capsys):
    def buggy(args):
        return {}["no such key"]

    with pytest.raises(KeyError):
        run_command(buggy, SimpleNamespace(db=None))
    assert run_command(lambda a: open("/proc/restgov-none/x", "w"), SimpleNamespace()) == 2
    assert capsys.readouterr().err.startswith("error: /proc/restgov-none/x: the folder /proc/restgov-none")


# ---------------------------------------------------------------- end to end, through the console script


def test_console_script_export_into_a_missing_folder(env, tmp_path):
    out = tmp_path / "missing" / "samples.parquet"
    res = restgov("export", env.cid, "--db", env.db, "--out", out, timeout=120)
    one_line((res.returncode, res.stdout, res.stderr), out, "does not exist")


def test_console_script_status_truncated_store(env):
    res = restgov("status", env.cid, "--db", env.truncated, timeout=120)
    one_line((res.returncode, res.stdout, res.stderr), env.truncated, "damaged")
