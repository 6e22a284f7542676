"""mask_password: every form of URI credentials is masked, in URIs and in free text."""

from __future__ import annotations

import pytest

from modules.tracking.redaction import mask_password


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://user:hunter2@host", "https://user:***@host"),
        ("https://:token123@host/api", "https://:***@host/api"),
        ("https://token123@host/api", "https://***@host/api"),
        ("https://user:p@ss@host:5000/x", "https://user:***@host:5000/x"),
        ("https://user:p@s@s@host", "https://user:***@host"),
        (
            "postgresql+psycopg2://user:p%40ss@db.internal:5432/mlflow",
            "postgresql+psycopg2://user:***@db.internal:5432/mlflow",
        ),
        ("http://alice:s3cr:et@[::1]:5000", "http://alice:***@[::1]:5000"),
        ("mlflow-artifacts://user:pw@host/path", "mlflow-artifacts://user:***@host/path"),
        ("gs://key@bucket/prefix", "gs://***@bucket/prefix"),
    ],
)
def test_every_userinfo_form_is_masked(text: str, masked: str) -> None:
    assert mask_password(text) == masked


def test_uris_in_free_text_are_masked_and_the_rest_is_kept() -> None:
    text = (
        "MLflow tracking server at http://u:pw1@127.0.0.1:9 is not reachable; "
        "store 'postgresql://app:pw2@db/x', token https://tok3@github.com/org/repo.git."
    )
    assert mask_password(text) == (
        "MLflow tracking server at http://u:***@127.0.0.1:9 is not reachable; "
        "store 'postgresql://app:***@db/x', token https://***@github.com/org/repo.git."
    )


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:5000/#/models",
        "sqlite:////tmp/mlflow.db",
        "models:/eeg-emotion-svm@champion",
        "http://host:5000/path?mail=a@b",  # an @ after the host is not userinfo
        "postgresql+psycopg2://mlflowdata@127.0.0.1:5432/mlflowdata",  # a role name, no password
        "no uri here: user:password@host",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert mask_password(text) == text


def test_an_unparseable_uri_is_still_masked() -> None:
    assert mask_password("http://u:pw@[::1") == "http://u:***@[::1"
