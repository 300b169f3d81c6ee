"""The ``smsgw`` command line: segment and validate, for people and for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import Settings
from worker.cli import EXIT_INVALID, EXIT_OK, main


@pytest.fixture
def runner(settings: Settings) -> CliRunner:
    return CliRunner()


def test_segment_json_reports_encoding_units_and_parts(runner: CliRunner) -> None:
    # Given a GSM text of 161 septets (one extension character)
    text = "a" * 159 + "€"
    # When segmented as JSON
    result = runner.invoke(main, ["segment", text, "--json"])
    # Then it is two parts; the euro moved wholly into the second
    assert result.exit_code == EXIT_OK, result.output
    payload = json.loads(result.output)
    assert payload["encoding"] == "GSM-7"
    assert payload["units"] == 161
    assert payload["segments"] == 2
    assert payload["parts"] == ["a" * 153, "a" * 6 + "€"]


def test_segment_with_max_length_lists_pieces(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["segment", "Hello there, your code is 123456 ok", "--max-length", "20", "--json"]
    )
    payload = json.loads(result.output)
    assert [piece["text"] for piece in payload["pieces"]] == [
        "Hello there, your",
        "code is 123456 ok",
    ]
    assert payload["total_segments"] == 2


def test_segment_table_names_the_encoding(runner: CliRunner) -> None:
    result = runner.invoke(main, ["segment", "Привет"])
    assert result.exit_code == EXIT_OK
    assert "UCS-2, 6 UTF-16 units, 1 SMS segment(s)" in result.output


def test_segment_rejects_an_impossible_max_length(runner: CliRunner) -> None:
    result = runner.invoke(main, ["segment", "€€", "--max-length", "1"])
    assert result.exit_code == 2
    assert "--max-length" in result.output


def test_validate_json_gives_e164_or_the_reason_and_exit_1(runner: CliRunner) -> None:
    # Given one good number, one national with a region, one premium-rate
    args = ["validate", "447079692712", "07911 123456", "+44 909 879 0000", "--region", "gb"]
    # When validated as JSON
    result = runner.invoke(main, [*args, "--json"])
    # Then each gets its verdict and the exit code says one failed
    assert result.exit_code == EXIT_INVALID
    rows = json.loads(result.output)
    assert [row["e164"] for row in rows] == ["+447079692712", "+447911123456", None]
    assert rows[2]["reason"] == "premium-rate numbers are not allowed"


def test_validate_all_good_exits_0_with_a_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", "18588123169", "923225867987"])
    assert result.exit_code == EXIT_OK
    assert "+18588123169" in result.output and "+923225867987" in result.output


def test_validate_uses_the_default_region_setting() -> None:
    from config.settings import override_settings

    with override_settings(default_region="GB"):
        result = CliRunner().invoke(main, ["validate", "07911 123456", "--json"])
    assert json.loads(result.output)[0]["e164"] == "+447911123456"


def test_validate_unknown_region_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", "123", "--region", "ZZ"])
    assert result.exit_code == 2
    assert "unknown region 'ZZ'" in result.output


def test_console_script_is_installed() -> None:
    # Given the installed entry point / When run as a process / Then it answers
    script = Path(sys.executable).with_name("smsgw")
    completed = subprocess.run(
        [str(script), "validate", "+447911123456", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)[0]["valid"] is True
