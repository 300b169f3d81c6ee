"""The ``smsgw`` command line: segment and validate, for people and for scripts."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import Settings
from worker.cli import EXIT_INVALID, EXIT_OK, main
from worker.redis_server import free_port


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


def _wait_for(url: str, *, context: ssl.SSLContext | None = None) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as reply:
                payload: dict[str, object] = json.loads(reply.read())
                return payload
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_sandbox_command_serves_until_stopped(tmp_path: Path, tls: bool) -> None:
    # Given `smsgw sandbox` started as a process on a free port (with TLS: a generated cert)
    port = free_port()
    script = Path(sys.executable).with_name("smsgw")
    command = [str(script), "sandbox", "--port", str(port), "--latency-ms", "1"]
    if tls:
        command += ["--tls", "--tls-dir", str(tmp_path / "tls")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # When a client asks its health endpoint
        scheme = "https" if tls else "http"
        context = None
        if tls:
            certificate = tmp_path / "tls" / "sandbox-cert.pem"
            deadline = time.monotonic() + 20
            while not certificate.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            context = ssl.create_default_context(cafile=str(certificate))
        health = _wait_for(f"{scheme}://127.0.0.1:{port}/_sandbox/health", context=context)
        # Then it answers, and the latency given at start is in force
        assert health == {"ok": True}
        faults = _wait_for(f"{scheme}://127.0.0.1:{port}/_sandbox/faults", context=context)
        assert faults["faults"] == [
            {**faults["faults"][0], "provider": "*", "latency_ms": 1.0}  # type: ignore[index]
        ]
    finally:
        process.terminate()
        stdout, _ = process.communicate(timeout=20)
    # And what it printed names the URL and the accounts, but no password
    printed = stdout.decode()
    assert f"{scheme}://127.0.0.1:{port}" in printed
    assert "vonage" in printed and "sandbox1" in printed
    assert "sandbox-secret" not in printed


def test_gateways_list_shows_every_built_in(runner: CliRunner) -> None:
    result = runner.invoke(main, ["gateways", "list", "--json"])
    assert result.exit_code == EXIT_OK
    rows = {row["name"]: row for row in json.loads(result.output)}
    builtins = {
        "vonage", "nexmo", "clickatell", "clickatell-http", "redoxygen", "bulletin", "twilio",
        "webhook",
    }  # fmt: skip
    assert builtins <= set(rows)
    assert all(rows[name]["error"] is None for name in builtins)
    assert rows["nexmo"]["alias_of"] == "vonage"
