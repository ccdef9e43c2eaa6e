"""Read a day's landing files into bronze rows, keeping what cannot be read.

Every field lands as text, exactly as received; typing and judging the values is the job of the
expectations in dbt_like_sql/. A line that cannot be read (bytes that are not UTF-8, a line over
the size limit, a wrong field count, JSON that is not an object) still becomes a row, with
``read_error`` saying what went wrong and ``raw`` holding the start of the line, so it ends in
quarantine with a reason instead of vanishing or stopping the day. A file that cannot be read at
all (empty, unknown format, a broken Parquet footer) becomes one such row with line 0.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FIELDS = ("record_id", "item_id", "agent_id", "label", "confidence", "submitted_at")
MAX_LINE_BYTES = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
RAW_PREVIEW_CHARS = 512

BRONZE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in FIELDS]
    + [
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("read_error", pa.string()),
        ("raw", pa.string()),
    ]
)

Row = dict[str, object]


def read_landing_folder(folder: Path) -> pa.Table:
    """Reads every landing file of one day, in file-name order, into the bronze schema.

    Files whose names start with ``.`` or ``_`` are ignored (temporary and marker files).
    """
    rows: list[Row] = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if path.is_dir():
                rows.append(_file_error(path, "a folder; landing files must lie in the day folder"))
            else:
                rows.extend(read_file(path))
    return pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA)


def read_file(path: Path) -> Iterator[Row]:
    """Yields the bronze rows of one landing file."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        yield _file_error(path, "empty file")
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        yield from _read_json_lines(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        yield _file_error(path, f"unsupported file type {suffix or '(none)'!r}")


def _row(path: Path, line: int, fields: dict[str, str | None], error: str | None, raw: str | None):
    row: Row = {name: fields.get(name) for name in FIELDS}
    row.update(source_file=path.name, source_line=line, read_error=error, raw=raw)
    return row


def _file_error(path: Path, error: str) -> Row:
    return _row(path, 0, {}, f"{path.name}: {error}", None)


def _lines(path: Path) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yields (line number, text or None, error or None) for each non-blank line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if number == 1:
                # Spreadsheet exports often open with a byte-order mark; it is not data.
                line = line.removeprefix(UTF8_BOM)
            if not line.strip():
                continue
            if len(line) > MAX_LINE_BYTES:
                yield (
                    number,
                    line[:RAW_PREVIEW_CHARS],
                    f"line is {len(line):,} bytes, over the limit of {MAX_LINE_BYTES:,}",
                )
                continue
            yield number, line, None


def _decode(path: Path, number: int, line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"{path.name}:{number}: not valid UTF-8 at byte {exc.start}"


def _preview(line: bytes) -> str:
    return line[:RAW_PREVIEW_CHARS].decode("utf-8", errors="backslashreplace")


def _read_csv(path: Path) -> Iterator[Row]:
    header: list[str] | None = None
    for number, line, error in _lines(path):
        if error is None:
            text, error = _decode(path, number, line)
        else:
            text, error = None, f"{path.name}:{number}: {error}"
        if header is None:
            if error is not None:
                yield _row(path, number, {}, f"{error} (header line)", _preview(line))
                return
            header = [name.strip().lower() for name in next(csv.reader([text]))]
            continue
        if error is not None:
            yield _row(path, number, {}, error, _preview(line))
            continue
        values = next(csv.reader([text]))
        if len(values) != len(header):
            message = f"{path.name}:{number}: expected {len(header)} fields, found {len(values)}"
            yield _row(path, number, {}, message, _preview(line))
            continue
        yield _row(path, number, dict(zip(header, values)), None, None)
    if header is None:
        yield _file_error(path, "no header line")


def _read_json_lines(path: Path) -> Iterator[Row]:
    for number, line, error in _lines(path):
        if error is None:
            text, error = _decode(path, number, line)
        else:
            text, error = None, f"{path.name}:{number}: {error}"
        if error is None:
            try:
                # Numbers stay as their literal text: confidence "1.7" must not become 1.7000001.
                record = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
            except json.JSONDecodeError as exc:
                error = f"{path.name}:{number}: not JSON ({exc.msg} at column {exc.colno})"
            else:
                if not isinstance(record, dict):
                    error = f"{path.name}:{number}: a JSON {type(record).__name__}, not an object"
        if error is not None:
            yield _row(path, number, {}, error, _preview(line))
            continue
        fields = {str(key).strip().lower(): _as_text(value) for key, value in record.items()}
        yield _row(path, number, fields, None, None)


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True)


def _read_parquet(path: Path) -> Iterator[Row]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        yield _file_error(path, f"not a readable Parquet file ({exc})")
        return
    columns = {}
    for name in table.column_names:
        key = name.strip().lower()
        if key in FIELDS:
            column = table.column(name)
            columns[key] = column if column.type == pa.string() else column.cast(pa.string())
    texts = {key: column.to_pylist() for key, column in columns.items()}
    for index in range(table.num_rows):
        fields = {key: values[index] for key, values in texts.items()}
        yield _row(path, index + 1, fields, None, None)
