"""sweeps/text.py: a URL's password never printed or stored, and what is not secret kept."""

from __future__ import annotations

import pytest

from sweeps.tracking import mask_url


@pytest.mark.parametrize("url", [
    "postgresql://vicreg:s3cret@db:5432/optuna", "postgresql+psycopg2://u:s3cret@h/d",
    "postgresql://db/optuna?user=u&password=s3cret", "postgresql://db/optuna?sslpassword=s3cret&connect_timeout=5",
    "postgresql://:s3cret@db/optuna", "postgresql://u:s3@cret@db/optuna", "postgresql://u:s3/cret@db/optuna",
    "postgresql://u:s3?cret@db/optuna", "postgresql:/u:s3cret@db/optuna", "postgresql//u:s3cret@db/optuna",
    "mysql://u:s3cret@h:notaport/d", "http://u:s3cret@mlflow:5000"])
def test_no_password_survives_masking(url: str) -> None:
    """Every URL form the review found leaking: the printed form and the stored param hold no
    part of the password; the stored param holds no user name either."""
    from sweeps.text import describe_url

    for shown in (mask_url(url), describe_url(url)):
        assert "s3" not in shown and "cret" not in shown, shown
    assert "vicreg" not in describe_url(url)


def test_masking_keeps_what_is_not_secret() -> None:
    from sweeps.text import UNPARSED, describe_url

    assert mask_url("postgresql://vicreg:s3cret@db:5432/optuna") == "postgresql://vicreg:***@db:5432/optuna"
    assert mask_url("postgresql://vicreg@db/optuna") == "postgresql://vicreg@db/optuna"
    assert mask_url("postgresql://u:p@db/o?connect_timeout=5&password=x") == "postgresql://u:***@db/o?connect_timeout=5"
    assert mask_url("postgresql:/u:s3cret@db/optuna") == UNPARSED
    for plain in ("sqlite:///mlflow.db", "journal:runs/demo.log", "/tmp/journal.log", None):
        assert mask_url(plain) == plain
    assert describe_url("postgresql://vicreg:s3cret@db:5432/optuna") == "postgresql://db:5432/optuna"
    assert describe_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    assert describe_url(None) == "journal (embedded)"
