"""Logging setup shared by the supervisor and the workers."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pumpwatch.errors import ConfigError
from pumpwatch.logsetup import setup_logging
from pumpwatch.settings import Settings

LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    r"worker-okx\[\d+\] WARNING pumpwatch\.test: okx_spot conn 0-1: lost$"
)


def test_file_lines_carry_time_process_level_logger(tmp_path: Path) -> None:
    settings = Settings()
    settings.data_dir = str(tmp_path)
    settings.logging.max_bytes = 300
    settings.logging.backups = 2
    try:
        path = setup_logging(settings, "worker-okx", console=False)
        assert path == tmp_path / "logs" / "worker-okx.log"
        log = logging.getLogger("pumpwatch.test")
        log.debug("hidden at INFO")
        for _ in range(12):
            log.warning("okx_spot conn 0-1: lost")
        lines = path.read_text().splitlines()
        assert lines and all(LINE_RE.match(line) for line in lines), lines
        assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
            "worker-okx.log",
            "worker-okx.log.1",
            "worker-okx.log.2",
        ]
        # Set up again: our handlers are replaced, not stacked.
        setup_logging(settings, "worker-okx", console=False)
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_pumpwatch_handler", False)]
        assert len(ours) == 1
        assert setup_logging(settings, "symbols", to_file=False) is None
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_pumpwatch_handler", False):
                logging.getLogger().removeHandler(h)
                h.close()


@pytest.mark.parametrize(("level", "name"), [("LOUD", "worker-x"), ("INFO", "../evil")])
def test_bad_level_or_process_name_is_config_error(tmp_path: Path, level: str, name: str) -> None:
    settings = Settings()
    settings.data_dir = str(tmp_path)
    settings.logging.level = level
    with pytest.raises(ConfigError):
        setup_logging(settings, name, console=False)
    assert not (tmp_path / "logs").exists()
