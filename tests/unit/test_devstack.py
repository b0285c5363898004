"""The dev stack's `.env` reading (devstack is dev tooling: it never ships, but `make run` relies on it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import Stack, read_dotenv


def test_dotenv_lines_comments_quotes_and_export(tmp_path: Path):
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n\nPORT=3999\nexport LOG_LEVEL=debug\nJWT_AUDIENCE='scheduler api'\n"
        'OTEL_SERVICE_NAME="sched"\nPOSTGRES_URL=\nHTTP_TARGET_ALLOW_CIDRS=10.0.0.0/8 # not a comment\n'
    )
    assert read_dotenv(path) == {
        "PORT": "3999",
        "LOG_LEVEL": "debug",
        "JWT_AUDIENCE": "scheduler api",
        "OTEL_SERVICE_NAME": "sched",
        "HTTP_TARGET_ALLOW_CIDRS": "10.0.0.0/8 # not a comment",
    }
    assert read_dotenv(tmp_path / "missing") == {}


@pytest.mark.parametrize("line", ["JUST_A_WORD", "=value", "BAD KEY=1"])
def test_dotenv_refuses_what_it_cannot_read(tmp_path: Path, line: str):
    path = tmp_path / ".env"
    path.write_text(f"PORT=1\n{line}\n")
    with pytest.raises(SystemExit, match=r"\.env:2"):
        read_dotenv(path)


def test_exported_variables_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".env").write_text("PORT=3999\nPOSTGRES_URL=postgresql://from-file/db\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.delenv("POSTGRES_URL", raising=False)
    stack = Stack()
    assert stack.environ["PORT"] == "4000"
    assert stack.environ["POSTGRES_URL"] == "postgresql://from-file/db"
    assert stack.env()["PORT"] == "4000"
