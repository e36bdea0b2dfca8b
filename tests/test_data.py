"""Tests for engine.data: loading, validating and writing example files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import DataConfig
from engine.data import DataError, Example, load_examples, load_split, write_examples

EXAMPLES = [
    Example("a", "2 + 3", "5"),
    Example("b", 'comma, "quotes" and\na newline', "multi\nline\r\nreference"),
    Example("c", "héllo wörld ✓", "ünïcode"),
]


def _jsonl(path: Path, *rows: object) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def _error(path: Path, **kw: object) -> DataError:
    with pytest.raises(DataError) as info:
        load_examples(path, **kw)
    return info.value


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "sub" / f"data{suffix}"
    write_examples(path, EXAMPLES)
    assert load_examples(path, id_field="id") == EXAMPLES
    by_row = load_examples(path)  # without id_field the id is the 0-based row number
    assert [e.id for e in by_row] == ["0", "1", "2"]
    assert [(e.source, e.reference) for e in by_row] == [(e.source, e.reference) for e in EXAMPLES]


@pytest.mark.parametrize(
    "row, field, problem",
    [
        ({"reference": "r"}, "source", "is missing"),
        ({"source": None, "reference": "r"}, "source", "is null"),
        ({"source": ["x"], "reference": "r"}, "source", "must be a string"),
        ({"source": {"a": 1}, "reference": "r"}, "source", "must be a string"),
        ({"source": True, "reference": "r"}, "source", "must be a string"),
        ({"source": "   \t", "reference": "r"}, "source", "is empty"),
        ({"source": "s", "reference": ""}, "reference", "is empty"),
        ({"source": "s"}, "reference", "is missing"),
        ({"source": "s", "reference": None}, "reference", "is null"),
    ],
)
def test_jsonl_bad_row(tmp_path: Path, row: dict, field: str, problem: str) -> None:
    path = _jsonl(tmp_path / "train.jsonl", {"source": "a", "reference": "b"}, "", row)
    err = _error(path)
    assert len(err.problems) == 1
    assert f"train.jsonl line 3: field '{field}' {problem}" in str(err)


def test_jsonl_numbers_are_text(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "n.jsonl", {"source": 12, "reference": 1.5})
    assert load_examples(path) == [Example("0", "12", "1.5")]


def test_jsonl_not_json_or_not_object(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", {"source": "a", "reference": "b"}, "{oops", "[1, 2]", "null")
    err = _error(path)
    assert "t.jsonl line 2: not valid JSON" in err.problems[0]
    assert "t.jsonl line 3: not a JSON object (got list)" in err.problems[1]
    assert "t.jsonl line 4: not a JSON object (got NoneType)" in err.problems[2]


def test_invalid_utf8_reported_on_its_line(tmp_path: Path) -> None:
    good = json.dumps({"source": "a", "reference": "b"}).encode()
    path = tmp_path / "u.jsonl"
    path.write_bytes(
        good + b"\n" + good + b"\n" + b'{"source": "\xff\xfe", "reference": "x"}\n' + good + b"\n"
    )
    assert _error(path).problems == [f"{path} line 3: not valid UTF-8"]
    path = tmp_path / "u.csv"
    path.write_bytes(b"source,reference\na,b\nbad \xc3\x28 byte,c\nd,e\n")
    assert _error(path).problems == [f"{path} line 3: not valid UTF-8"]


def test_csv_bad_rows_report_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "id,source,reference\n"
        '1,"a quoted\nmultiline\nsource",ok\n'  # lines 2-4
        "2,fine,\n"  # line 5: empty reference
        "\n"  # line 6: blank, skipped
        "3,  ,r\n"  # line 7: whitespace source
        "4,only-source\n"  # line 8: short row
        "1,dup,r\n"  # line 9: duplicate id
        "5,a,b,extra\n",  # line 10: too many fields
        encoding="utf-8",
    )
    err = _error(path, id_field="id")
    assert err.problems == [
        f"{path} line 5: field 'reference' is empty",
        f"{path} line 7: field 'source' is empty",
        f"{path} line 8: field 'reference' is missing",
        f"{path} line 9: field 'id' value '1' duplicates {path} line 2",
        f"{path} line 10: 4 fields but the header has 3",
    ]


def test_csv_multiline_field_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('source,reference\n"x\ny",z\n', encoding="utf-8")
    assert load_examples(path) == [Example("0", "x\ny", "z")]


def test_csv_missing_column_and_header(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("src,reference\na,b\nc,d\n", encoding="utf-8")
    err = _error(path)
    assert len(err.problems) == 1  # once, not once per row
    assert f"{path} line 1: column 'source' is missing" in str(err)
    path.write_text("", encoding="utf-8")
    assert "header row is required" in str(_error(path))
    path.write_text("source,reference\n", encoding="utf-8")
    assert _error(path).problems == [f"{path}: no rows"]


def test_parquet_bad_rows_name_row_index(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    table = pa.table({"source": ["a", None, "c", "d"], "reference": ["x", "y", "", "z"], "id": [1, 2, 3, 1]})
    pq.write_table(table, path)
    err = _error(path, id_field="id")
    assert err.problems == [
        f"{path} row 1: field 'source' is null",
        f"{path} row 2: field 'reference' is empty",
        f"{path} row 3: field 'id' value '1' duplicates {path} row 0",
    ]
    pq.write_table(pa.table({"source": ["a"]}), path)
    assert "column 'reference' is missing" in str(_error(path))


def test_id_field(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "i.jsonl",
        {"k": 7, "source": "a", "reference": "b"},
        {"k": "x", "source": "c", "reference": "d"},
    )
    assert [e.id for e in load_examples(path, id_field="k")] == ["7", "x"]
    path = _jsonl(
        tmp_path / "i.jsonl",
        {"k": 7, "source": "a", "reference": "b"},
        {"k": "7", "source": "c", "reference": "d"},
    )
    assert "i.jsonl line 2: field 'k' value '7' duplicates" in str(_error(path, id_field="k"))
    path = _jsonl(tmp_path / "i.jsonl", {"source": "a", "reference": "b"})
    assert "i.jsonl line 1: field 'k' is missing" in str(_error(path, id_field="k"))


def test_custom_fields_and_missing_reference(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "q.jsonl",
        {"question": "q1", "answer": "a1"},
        {"question": "q2"},
        {"question": "q3", "answer": None},
    )
    assert "line 2: field 'answer' is missing" in str(
        _error(path, source_field="question", reference_field="answer")
    )
    got = load_examples(path, source_field="question", reference_field="answer", allow_missing_reference=True)
    assert [e.reference for e in got] == ["a1", "", ""]


def test_many_problems_all_listed(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "many.jsonl", *[{"source": "", "reference": "r"} for _ in range(25)])
    err = _error(path)
    assert len(err.problems) == 25
    assert "many.jsonl line 20:" in str(err) and "many.jsonl line 21:" not in str(err)
    assert str(err).endswith("... and 5 more")
    path = _jsonl(tmp_path / "two.jsonl", {"source": "", "reference": "r"}, {"source": "s", "reference": ""})
    assert str(_error(path)) == (
        f"{path} line 1: field 'source' is empty\n{path} line 2: field 'reference' is empty"
    )


def test_file_level_errors(tmp_path: Path) -> None:
    assert "nope.jsonl: no such file" in str(_error(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("source\n", encoding="utf-8")
    assert "unsupported file type '.txt'" in str(_error(tmp_path / "x.txt"))
    assert "empty.jsonl: no rows" in str(_error(_jsonl(tmp_path / "empty.jsonl", "", "  ")))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert "bad.parquet: not a readable Parquet file" in str(_error(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match="unsupported"):
        write_examples(tmp_path / "out.txt", EXAMPLES)


def test_load_split(tmp_path: Path) -> None:
    write_examples(tmp_path / "train.csv", EXAMPLES)
    write_examples(tmp_path / "val.jsonl", EXAMPLES[:1])
    cfg = DataConfig(train=str(tmp_path / "train.csv"), validation=str(tmp_path / "val.jsonl"), id_field="id")
    assert load_split(cfg, "train") == EXAMPLES
    assert load_split(cfg, "validation") == EXAMPLES[:1]
    assert load_split(cfg, "test") == []
    with pytest.raises(ValueError, match="split"):
        load_split(cfg, "dev")


def test_csv_bom_crlf_and_unterminated_quote(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_bytes(b'\xef\xbb\xbfsource,reference\r\na,b\r\n"x\r\ny",\r\n')
    assert _error(path).problems == [f"{path} line 3: field 'reference' is empty"]
    path.write_bytes(b'source,reference\na,b\n"never closed,c\nd,e\n')
    assert _error(path).problems[0].startswith(f"{path} line 3: malformed CSV")
