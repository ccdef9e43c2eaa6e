"""The demo refuses days that would mix datasets or are not complete yet."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import click
import pytest

from pf_platform import settings
from pf_platform.demo import check_days, is_loopback
from pf_platform.labeling.landing import resolve_dataset


def test_days_holding_another_dataset_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PF_HOME", str(tmp_path))
    monkeypatch.delenv("PF_LANDING_ROOT", raising=False)
    day = settings.landing_root() / "2026-11-02"
    day.mkdir(parents=True)
    (day / "face-sentiment.csv").write_text("record_id\n")
    dogs, faces = resolve_dataset("dog-breeds"), resolve_dataset("face-sentiment")

    check_days(faces, date(2026, 11, 1), 7)
    with pytest.raises(click.ClickException, match="already holds face-sentiment.csv"):
        check_days(dogs, date(2026, 11, 1), 7)
    check_days(dogs, date(2026, 11, 3), 3)


def test_days_that_are_not_complete_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PF_HOME", str(tmp_path))
    today = datetime.now(UTC).date()
    faces = resolve_dataset("face-sentiment")
    with pytest.raises(click.ClickException, match="complete days"):
        check_days(faces, today - timedelta(days=1), 2)
    with pytest.raises(click.ClickException, match="complete days"):
        check_days(faces, date(2026, 10, 31), 2)


def test_loopback_urls():
    assert is_loopback("http://localhost:8765") and is_loopback("http://127.0.0.1:1")
    assert not is_loopback("https://127.0.0.1:8765") and not is_loopback("http://10.0.0.1:80")
