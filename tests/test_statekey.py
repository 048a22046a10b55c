"""The request-state key: its file format, the first-run key file, rotation, and the command line.

HOME and XDG_CONFIG_HOME point into a temporary directory (conftest.py), so
the default key file is created there, never in the real home directory.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from test_cli import Start, cli_env, run_cli, start  # noqa: F401  (the `start` fixture)

from mcp_auth.auth.statekey import (
    MAX_STATE_KEYS,
    MIN_STATE_KEY_BYTES,
    StateKeyFile,
    default_state_key_path,
    open_state_key,
    parse_key_ring,
)
from mcp_auth.config import Config
from mcp_auth.errors import ConfigError

KEY_A = base64.urlsafe_b64encode(b"a" * 32).rstrip(b"=").decode()
KEY_B = base64.b64encode(b"b" * 48).decode()  # standard base64 with padding, as `openssl rand -base64 48` prints


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        pytest.param(KEY_A + "\n", (b"a" * 32,), id="one-base64url"),
        pytest.param(f"# rotated 2026-12-01\n{KEY_B}\n\n{KEY_A}\n", (b"b" * 48, b"a" * 32), id="ring-first-signs"),
        pytest.param(f"  {KEY_A}  \r\n", (b"a" * 32,), id="whitespace-crlf"),
    ],
)
def test_key_ring_lines(text: str, keys: tuple[bytes, ...]) -> None:
    assert parse_key_ring(text.encode(), "state key file k") == keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "holds no key", id="empty"),
        pytest.param("# only a comment\n", "holds no key", id="comment-only"),
        pytest.param(base64.b64encode(b"s" * 31).decode(), "line 1 is 31 bytes; a key is at least 32", id="short"),
        pytest.param("correct horse battery staple!!!!", "line 1 is not base64", id="passphrase"),
        pytest.param("é" * 40, "not ASCII", id="non-ascii"),
        pytest.param((KEY_A + "\n") * (MAX_STATE_KEYS + 1), "more than 16", id="too-many"),
    ],
)
def test_bad_key_files_are_config_errors_that_say_how_to_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_key_ring(text.encode(), "state key file k")
    text_of_error = str(caught.value).replace("the key on line", "line")
    assert message in text_of_error
    assert "token_urlsafe(32)" in str(caught.value) or "remove retired keys" in str(caught.value)


def test_the_first_run_creates_a_private_key_file_and_later_runs_reuse_it(isolated_home: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(isolated_home / ".config")}
    source, created = open_state_key(None, "default", environ)
    path = default_state_key_path(environ)
    assert created and source.path == path == isolated_home / ".config" / "mcp-auth" / "state-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    keys = source.keys()
    assert keys is not None and len(keys) == 1 and len(keys[0]) == MIN_STATE_KEY_BYTES
    again, created_again = open_state_key(None, "default", environ)
    assert not created_again and again.keys() == keys
    assert KEY_A not in repr(source) and base64.urlsafe_b64encode(keys[0]).decode()[:20] not in repr(source)


def test_racing_first_runs_agree_on_one_key(isolated_home: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(isolated_home / "race")}
    barrier = threading.Barrier(8)
    results: list[tuple[tuple[bytes, ...] | None, bool]] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        source, created = open_state_key(None, "default", environ)
        with lock:
            results.append((source.keys(), created))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8
    assert sum(created for _, created in results) == 1
    assert len({keys for keys, _ in results}) == 1


def test_an_explicit_key_file_is_checked_like_a_token_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="does not exist; create it with one key per line"):
        open_state_key(str(tmp_path / "missing"), "--state-key-file", {})
    writable = write(tmp_path / "writable", KEY_A + "\n", 0o622)
    with pytest.raises(ConfigError, match="other users can change the request-state key; run: chmod go-w"):
        open_state_key(str(writable), "--state-key-file", {})
    caplog.set_level(logging.WARNING)
    readable = write(tmp_path / "secret", KEY_A + "\n", 0o444)  # a Docker secret
    source, created = open_state_key(str(readable), "--state-key-file", {})
    assert not created and source.keys() == (b"a" * 32,)
    assert "other users can read the request-state key" in caplog.text
    assert KEY_A not in caplog.text


def test_a_rotated_key_file_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = write(tmp_path / "ring", KEY_A + "\n")
    source = StateKeyFile(path, "state key file ring", default_file=False)
    assert source.keys() == (b"a" * 32,)
    write(path, f"{KEY_B}\n{KEY_A}\n")
    assert source.keys() == (b"b" * 48, b"a" * 32)
    write(path, "short\n")  # a bad file after startup: no key (every state refused), never the old one silently
    assert source.keys() is None


def test_the_settings_come_from_flags_environment_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('state_key_file = "/etc/mcp/state-key"\nrequest_state_ttl = 120\n')
    config = Config.from_sources({}, {"MCP_AUTH_CONFIG": str(toml)})
    assert (config.state_key_file, config.request_state_ttl) == ("/etc/mcp/state-key", 120)
    config = Config.from_sources({}, {"MCP_AUTH_STATE_KEY_FILE": "/k", "MCP_AUTH_REQUEST_STATE_TTL": "30"})
    assert (config.state_key_file, config.request_state_ttl, config.source_of("state_key_file")) == (
        "/k",
        30,
        "MCP_AUTH_STATE_KEY_FILE",
    )
    with pytest.raises(ConfigError, match="request_state_ttl 0 is outside 1-86400 seconds"):
        Config(request_state_ttl=0)


def test_the_command_line_refuses_a_short_key_with_exit_2(tmp_path: Path, isolated_home: Path) -> None:
    short = write(tmp_path / "short", base64.b64encode(b"x" * 16).decode() + "\n")
    result = run_cli("--port", "0", "--state-key-file", str(short), env=cli_env())
    assert result.returncode == 2
    assert "the key on line 1 is 16 bytes; a key is at least 32 random bytes" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_summary_names_the_key_source_never_the_key(start: Start, tmp_path: Path, isolated_home: Path) -> None:  # noqa: F811
    generated = start("--port", "0")
    key_line = next(line for line in generated.stderr.splitlines() if "request state:" in line)
    default = isolated_home / ".config" / "mcp-auth" / "state-key"
    assert f"key from default state key file {default}; valid 600 s" in key_line
    assert "every worker and host must use the same key file" in key_line
    explicit = write(tmp_path / "ring", KEY_A + "\n")
    given = start("--port", "0", "--state-key-file", str(explicit), "--request-state-ttl", "90")
    key_line = next(line for line in given.stderr.splitlines() if "request state:" in line)
    assert f"key from state key file {explicit} (--state-key-file); valid 90 s" in key_line
    generated_key = default.read_text().strip()
    for cli in (generated, given):
        assert generated_key not in cli.output and KEY_A not in cli.output
