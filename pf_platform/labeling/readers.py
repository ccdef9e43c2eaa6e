"""Read a day's landing files into bronze rows, keeping what cannot be read.

Every field lands as text, exactly as received; typing and judging the values is the job of the
expectations in dbt_like_sql/. A line that cannot be read (bytes that are not UTF-8, a line over
the size limit, a wrong field count, CSV the csv module refuses, JSON that is not an object)
still becomes a row, with ``read_error`` saying what went wrong and ``raw`` holding the start of
the line, so it ends in quarantine with a reason instead of vanishing or stopping the day. A file
that cannot be read at all (empty, unknown format, a broken Parquet footer) becomes one such row
with line 0.

CSV, the format labels really land in, is read in bulk: a file is cut into blocks of whole lines,
and in each block the plain lines (valid UTF-8, no quote, no stray carriage return, within the
size limit, the header's field count) are split into columns by Arrow kernels. Every other line
goes through the same line-by-line reading as before, so it gets the same row and reason; a block
that is not valid UTF-8 is read line by line as a whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FIELDS = ("record_id", "item_id", "agent_id", "label", "confidence", "submitted_at")
MAX_LINE_BYTES = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
RAW_PREVIEW_CHARS = 512
# Lines of a CSV file decoded and split together; big enough that the per-block cost vanishes,
# small enough that a block with one bad byte read line by line stays cheap.
CSV_BLOCK_BYTES = 8 << 20

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
    tables: list[pa.Table] = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if path.is_dir():
                error = _file_error(path, "a folder; landing files must lie in the day folder")
                tables.append(_table([error]))
            else:
                tables.append(read_file(path))
    return pa.concat_tables(tables) if tables else BRONZE_SCHEMA.empty_table()


def read_file(path: Path) -> pa.Table:
    """The bronze rows of one landing file, in line order."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        return _table([_file_error(path, "empty file")])
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _table(_read_json_lines(path))
    if suffix == ".parquet":
        return _read_parquet(path)
    return _table([_file_error(path, f"unsupported file type {suffix or '(none)'!r}")])


def _table(rows) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=BRONZE_SCHEMA)


def _row(path: Path, line: int, fields: dict[str, str | None], error: str | None, raw: str | None):
    row: Row = {name: fields.get(name) for name in FIELDS}
    row.update(source_file=path.name, source_line=line, read_error=error, raw=raw)
    return row


def _file_error(path: Path, error: str) -> Row:
    return _row(path, 0, {}, f"{path.name}: {error}", None)


def _clean(number: int, line: bytes) -> tuple[bytes, str | None] | None:
    """A raw line without its line break: (line, None), (its start, error) when over the size
    limit, or None when blank."""
    line = line.rstrip(b"\r\n")
    if number == 1:
        # Spreadsheet exports often open with a byte-order mark; it is not data.
        line = line.removeprefix(UTF8_BOM)
    if not line.strip():
        return None
    if len(line) > MAX_LINE_BYTES:
        return (
            line[:RAW_PREVIEW_CHARS],
            f"line is {len(line):,} bytes, over the limit of {MAX_LINE_BYTES:,}",
        )
    return line, None


def _lines(path: Path) -> Iterator[tuple[int, bytes, str | None]]:
    """Yields (line number, line, error or None) for each non-blank line of a file."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            cleaned = _clean(number, line)
            if cleaned is not None:
                yield number, *cleaned


def _decode(path: Path, number: int, line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"{path.name}:{number}: not valid UTF-8 at byte {exc.start}"


def _preview(line: bytes) -> str:
    return line[:RAW_PREVIEW_CHARS].decode("utf-8", errors="backslashreplace")


def _read_csv(path: Path) -> pa.Table:
    data = path.read_bytes()
    header, offset, number = None, 0, 1
    while header is None and offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        current, cleaned = number, _clean(number, data[offset:end])
        offset, number = end, number + 1
        if cleaned is None:
            continue
        line, error = cleaned
        if error is None:
            text, error = _decode(path, current, line)
        else:
            text, error = None, f"{path.name}:{current}: {error}"
        if error is None:
            try:
                names = next(csv.reader([text]))
            except csv.Error as exc:
                error = f"{path.name}:{current}: not readable as CSV ({exc})"
        if error is not None:
            return _table([_row(path, current, {}, f"{error} (header line)", _preview(line))])
        header = [name.strip().lower() for name in names]
    if header is None:
        return _table([_file_error(path, "no header line")])

    tables = []
    while offset < len(data):
        end = len(data)
        if end - offset > CSV_BLOCK_BYTES:
            # Whole lines only: up to the last line break within the block, or past a longer line.
            cut = data.rfind(b"\n", offset, offset + CSV_BLOCK_BYTES)
            if cut < 0:
                cut = data.find(b"\n", offset + CSV_BLOCK_BYTES)
            end = len(data) if cut < 0 else cut + 1
        tables.append(_csv_block(path, data[offset:end], number, header))
        number += data.count(b"\n", offset, end)
        offset = end
    return pa.concat_tables(tables) if tables else BRONZE_SCHEMA.empty_table()


def _numbered(first: int, count: int) -> pa.Array:
    """first, first + 1, ... as int64, without a Python list of the numbers."""
    return pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), count)), first - 1)


def _csv_line(path: Path, number: int, line: bytes, error: str | None, header: list[str]) -> Row:
    """The bronze row of one data line, read on its own."""
    if error is None:
        text, error = _decode(path, number, line)
    else:
        text, error = None, f"{path.name}:{number}: {error}"
    if error is not None:
        return _row(path, number, {}, error, _preview(line))
    try:
        values = next(csv.reader([text]))
    except csv.Error as exc:
        # A carriage return inside an unquoted field, or a field over the csv module's limit:
        # the line is unreadable, not the file.
        return _row(
            path, number, {}, f"{path.name}:{number}: not readable as CSV ({exc})", _preview(line)
        )
    if len(values) != len(header):
        message = f"{path.name}:{number}: expected {len(header)} fields, found {len(values)}"
        return _row(path, number, {}, message, _preview(line))
    return _row(path, number, dict(zip(header, values)), None, None)


def _csv_block(path: Path, block: bytes, first: int, header: list[str]) -> pa.Table:
    """The bronze rows of a run of whole data lines, the first of them numbered ``first``."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        rows = []
        for index, raw in enumerate(block.split(b"\n")):
            cleaned = _clean(first + index, raw)
            if cleaned is not None:
                rows.append(_csv_line(path, first + index, *cleaned, header))
        return _table(rows)

    # The block's bytes, already checked as UTF-8 above, become one Arrow string without a
    # copy; pa.array([text]) would copy it through a builder, slower than the rest together.
    offsets = pa.array([0, len(block)], pa.int64()).buffers()[1]
    whole = pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(block))
    lines = pc.list_flatten(pc.split_pattern(whole, "\n"))
    # After the split on \n only carriage returns can trail, which rstrip(b"\r\n") drops.
    lines = pc.utf8_rtrim(lines, characters="\r")
    numbers = _numbered(first, len(lines))
    # ASCII whitespace, as bytes.strip() sees it: what looks blank is skipped, not quarantined.
    blank = pc.equal(pc.ascii_trim_whitespace(lines), "")
    # A quote or a stray carriage return needs the csv module; so does a line long enough to
    # hold a field over the csv module's field limit; an over-long line needs its message.
    special = pc.greater(pc.binary_length(lines), min(MAX_LINE_BYTES, csv.field_size_limit()))
    for mark in ('"', "\r"):
        if mark in text:
            special = pc.or_(special, pc.match_substring(lines, mark))
    fields = pc.add(pc.count_substring(lines, ","), 1)
    plain = pc.and_(pc.and_(pc.invert(blank), pc.invert(special)), pc.equal(fields, len(header)))
    others = pc.and_(pc.invert(blank), pc.invert(plain))

    plain_lines = lines.filter(plain)
    values = pc.split_pattern(plain_lines, ",")
    # dict(zip(header, values)) keeps the last of repeated names; so does this.
    position = {name: index for index, name in enumerate(header)}
    count = len(plain_lines)
    columns = {
        name: (
            pc.list_element(values, position[name]).cast(pa.string())
            if name in position
            else pa.nulls(count, pa.string())
        )
        for name in FIELDS
    }
    table = pa.table(
        {
            **columns,
            "source_file": pa.repeat(pa.scalar(path.name, pa.string()), count),
            "source_line": numbers.filter(plain),
            "read_error": pa.nulls(count, pa.string()),
            "raw": pa.nulls(count, pa.string()),
        },
        schema=BRONZE_SCHEMA,
    )
    if not pc.any(others).as_py():
        return table
    rows = []
    for number, line in zip(
        numbers.filter(others).to_pylist(), lines.filter(others).to_pylist(), strict=True
    ):
        rows.append(_csv_line(path, number, *_clean(number, line.encode("utf-8")), header))
    merged = pa.concat_tables([table, _table(rows)])
    return merged.take(pc.sort_indices(merged["source_line"]))


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


def _read_parquet(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        return _table([_file_error(path, f"not a readable Parquet file ({exc})")])
    count = table.num_rows
    columns = {}
    for name in table.column_names:
        key = name.strip().lower()
        if key in FIELDS:
            column = table.column(name)
            columns[key] = column if column.type == pa.string() else column.cast(pa.string())
    return pa.table(
        {
            **{
                name: columns[name] if name in columns else pa.nulls(count, pa.string())
                for name in FIELDS
            },
            "source_file": pa.repeat(pa.scalar(path.name, pa.string()), count),
            "source_line": _numbered(1, count),
            "read_error": pa.nulls(count, pa.string()),
            "raw": pa.nulls(count, pa.string()),
        },
        schema=BRONZE_SCHEMA,
    )
