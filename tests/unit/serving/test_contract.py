"""MLflow's request bodies parsed into float frames in the signature's order, or one-line 400s."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modules.serving.contract import RequestError, parse_request

COLUMNS = ["a", "b", "c"]


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_the_three_body_formats_give_the_same_frame_in_signature_order():
    expected = pd.DataFrame([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], columns=COLUMNS)
    split = _json({"dataframe_split": {"columns": ["c", "a", "b"], "data": [[3, 1, 2], [6, 4, 5]]}})
    records = _json({"dataframe_records": [{"b": 2, "a": 1, "c": 3}, {"b": 5, "a": 4, "c": 6}]})
    csv = b"a,b,c\n1,2,3\n4,5,6\n"
    for body, content_type in [
        (split, "application/json"),
        (records, None),
        (csv, "text/csv; charset=utf-8"),
        (b"c,a,b\r\n3,1,2\r\n6,4,5\r\n", "text/csv"),
        (b'"a","b","c"\n1,2,3\n4,5,6\n', "text/csv"),  # quoted: pandas' reader, not the fast path
    ]:
        frame = parse_request(body, content_type, COLUMNS)
        pd.testing.assert_frame_equal(frame, expected)
        assert all(dtype == np.float64 for dtype in frame.dtypes)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (_json({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}), None, "missing columns 'c'"),
        (_json({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]]}}), None, "unexpected columns 'd'"),
        (_json({"dataframe_split": {"columns": ["a", "a", "b"], "data": [[1, 2, 3]]}}), None, "repeated columns 'a'"),
        (_json({"dataframe_split": {"columns": COLUMNS, "data": [[1, "x", 3]]}}), None, "columns 'b'"),
        (_json({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, None]]}}), None, "columns 'c'"),
        (_json({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, 3], [1, 2]]}}), None, "expected rows of 3 values"),
        (_json({"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}]}), None, "missing columns 'c'"),
        (_json({"inputs": [[1, 2, 3]]}), None, "not accepted"),
        (_json([1, 2, 3]), None, "expected a JSON object"),
        (b"{not json", None, "not JSON"),
        (b"a,b,c\n1,x,3\n", "text/csv", "columns 'b'"),
        (b"a,b,c\n1,,3\n", "text/csv", "columns 'b'"),
        (b"a,b,c\n", "text/csv", "no rows"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_naming_the_problem(body, content_type, message):
    with pytest.raises(RequestError) as error:
        parse_request(body, content_type, COLUMNS)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert error.value.status == 400


def test_many_missing_columns_are_counted_not_listed():
    expected = [f"f{i}" for i in range(2548)]
    with pytest.raises(RequestError) as error:
        parse_request(
            _json({"dataframe_split": {"columns": expected[:10], "data": [[0.0] * 10]}}), None, expected
        )
    assert "and 2533 more" in str(error.value)
    assert "(the model takes 2548 named columns)" in str(error.value)


def test_other_content_types_are_refused_with_415():
    with pytest.raises(RequestError) as error:
        parse_request(b"a", "text/plain", COLUMNS)
    assert error.value.status == 415
