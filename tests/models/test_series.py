from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from convergence.models.series import Series, SeriesError, parse_timestamp, read_series

JAN1 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read_error(path: Path) -> str:
    """The message of the SeriesError reading ``path``, with the path itself replaced by ``F``."""
    with pytest.raises(SeriesError) as err:
        read_series(path)
    return str(err.value).replace(str(path), "F")


# -- parse_timestamp ------------------------------------------------------------------------
def test_parse_timestamp_known_answers() -> None:
    assert parse_timestamp("2024-01-01T00:00:00Z") == JAN1
    assert parse_timestamp("2024-01-01T00:00:00") == JAN1  # naive ISO is UTC
    assert parse_timestamp("1704067200.5") == JAN1 + 0.5
    assert parse_timestamp("1704067200000") == JAN1  # milliseconds


@pytest.mark.parametrize(("raw", "message"), [
    ("soon", "timestamp 'soon' is neither unix seconds nor ISO-8601 (e.g. 2024-05-01T12:00:00Z)"),
    ("-5", "timestamp '-5' is outside 1970-01-01..9999-12-31"),  # numbers stay unix seconds
    ("inf", "timestamp 'inf' is not a finite timestamp"),
])
def test_parse_timestamp_errors_start_with_the_column_name(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_timestamp(raw)


# -- read_series: good files ----------------------------------------------------------------
def test_columns_in_any_order_case_and_spacing_with_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "Value , TIMESTAMP,note\n"
                           "5,2024-01-01T00:00:00Z,a\n"
                           "\n"
                           "6.5, 1704067201 ,b\n"
                           " 7 ,1704067202000,c\n")
    s = read_series(path)
    assert isinstance(s, Series) and len(s) == 3
    assert s.timestamps.tolist() == [JAN1, JAN1 + 1, JAN1 + 2]
    assert s.values.tolist() == [5.0, 6.5, 7.0]
    assert s.text == ("2024-01-01T00:00:00Z", "1704067201", "1704067202000")  # as written, stripped
    assert s.timestamps.dtype == np.float64 and s.values.dtype == np.float64


def test_blank_lines_before_the_header_and_a_byte_order_mark_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff\n  \ntimestamp,value\r\n1,2\r\n3,-4e2\r\n".encode())
    s = read_series(path)
    assert s.timestamps.tolist() == [1.0, 3.0] and s.values.tolist() == [2.0, -400.0]


def test_accepts_a_path_given_as_text(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,value\n10,1\n")
    assert read_series(str(path)).values.tolist() == [1.0]  # type: ignore[arg-type]


def test_series_is_frozen(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n10,1\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.text = ()  # type: ignore[misc]


# -- read_series: refusals name the file, the line and the problem --------------------------
def test_series_error_is_a_value_error() -> None:
    assert issubclass(SeriesError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    assert read_error(tmp_path / "nope.csv") == "cannot open F: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert read_error(tmp_path) == "cannot open F: Is a directory"


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert read_error(write(tmp_path, text)) == ("F is empty; expected a header 'timestamp,value' "
                                                 "and one row per tick")


def test_header_without_rows(tmp_path: Path) -> None:
    assert read_error(write(tmp_path, "timestamp,value\n\n")) == "F has a header but no data rows"


def test_header_missing_a_column_names_its_line(tmp_path: Path) -> None:
    msg = read_error(write(tmp_path, "\n\ntime,value\n1,2\n"))
    assert msg == "F line 3: header must name the columns 'timestamp' and 'value', got 'time,value'"


def test_row_with_a_different_field_count(tmp_path: Path) -> None:
    msg = read_error(write(tmp_path, "timestamp,value\n1,2\n2,3,4\n"))
    assert msg == "F line 3: expected 2 fields like the header, got 3: '2,3,4'"


def test_bad_timestamp_line_number_counts_blank_lines(tmp_path: Path) -> None:
    msg = read_error(write(tmp_path, "timestamp,value\n\n1,2\n\nsoon,3\n"))
    assert msg == ("F line 5: timestamp 'soon' is neither unix seconds nor ISO-8601 "
                   "(e.g. 2024-05-01T12:00:00Z)")


@pytest.mark.parametrize(("value", "problem"), [
    ("", "value '' is not a number"),
    ("nan", "value 'nan' is not finite"),
    ("-inf", "value '-inf' is not finite"),
    ("12abc", "value '12abc' is not a number"),
])
def test_bad_values(tmp_path: Path, value: str, problem: str) -> None:
    assert read_error(write(tmp_path, f"timestamp,value\n1,{value}\n")) == f"F line 2: {problem}"


def test_duplicates_are_merged_with_their_mean_and_a_note(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n5,1\n5,2\n6,4\n"))
    assert s.timestamps.tolist() == [5.0, 6.0] and s.values.tolist() == [1.5, 4.0]
    assert s.row_of.tolist() == [0, 0, 1] and s.text == ("5", "6")
    assert s.notes == ("merged 2 rows sharing a timestamp into 1 (their mean value)",)


def test_rows_out_of_order_are_sorted_within_the_window_and_later_ones_dropped(tmp_path: Path) -> None:
    rows = "".join(f"{t},{t}\n" for t in [10, 11, 13, 12, 14, 15, 16, 9, 17])
    s = read_series(write(tmp_path, "timestamp,value\n" + rows), max_disorder_rows=3)
    # 12 is one row late (sorted in); 9 comes 7 rows after 10 was read: too late, dropped
    assert s.timestamps.tolist() == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    assert s.values.tolist() == s.timestamps.tolist()
    assert s.row_of.tolist() == [0, 1, 3, 2, 4, 5, 6, -1, 7]
    assert s.notes == ("sorted 1 row that arrived out of order (at most 1 row late)",
                       "dropped 1 row that arrived more than 3 rows out of order")


def test_in_order_file_has_no_notes_and_identity_rows(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n1,1\n2,2\n"))
    assert s.notes == () and s.row_of.tolist() == [0, 1] and s.labels is None


def test_the_same_instant_in_seconds_and_milliseconds_is_a_duplicate(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n1704067200,1\n1704067200000,3\n"))
    assert s.timestamps.tolist() == [1704067200.0] and s.values.tolist() == [2.0]


def test_merging_huge_values_does_not_overflow(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n1,1e308\n1,1e308\n"))
    assert s.values.tolist() == [1e308]


def test_label_column_follows_merged_and_sorted_rows(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value,is_anomaly\n2,1,0\n1,1,0\n2,5,1\n"),
                    label_column="is_anomaly")
    assert s.labels is not None and s.labels.tolist() == [0, 1]
    assert "line 2: label 'x'" in read_error_labels(write(tmp_path, "timestamp,value,is_anomaly\n1,1,x\n",
                                                          "bad.csv"))


def read_error_labels(path: Path) -> str:
    with pytest.raises(SeriesError) as err:
        read_series(path, label_column="is_anomaly")
    return str(err.value)


def test_dates_before_1970_are_historical_not_errors(tmp_path: Path) -> None:
    s = read_series(write(tmp_path, "timestamp,value\n1871-01-01,1120\n1872-01-01,1160\n"))
    assert s.timestamps[0] < s.timestamps[1] < 0 and s.text == ("1871-01-01", "1872-01-01")


def test_malformed_csv(tmp_path: Path) -> None:
    msg = read_error(write(tmp_path, "timestamp,value\n1," + "9" * 200_000 + "\n"))
    assert msg.startswith("F line 2: malformed CSV (field larger than field limit")


def test_binary_file_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "img.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert read_error(path) == "F is not UTF-8 text (invalid start byte); is it a CSV file?"
