"""scripts/bench.py runs end to end: eleven real servers and a redis-server, every call answered, every number
in its JSON.

It asserts behaviour, never speed: which server is faster is the benchmark's
output, not a test outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis_support import require_redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"
# --quick takes under a minute on 2 cores, even busy; this only stops a hung run.
DEADLINE_SECONDS = 300

STORE_SERVERS = ("mcp_auth_gunicorn_redis", "mcp_auth_gunicorn_2w_redis")
STATELESS_SERVERS = ("stateless_serve", "stateless_gunicorn", "stateless_gunicorn_2w")
MCP_AUTH_SERVERS = ("mcp_auth_serve", "mcp_auth_gunicorn", "mcp_auth_gunicorn_2w", *STORE_SERVERS, *STATELESS_SERVERS)
RAW_SERVERS = ("raw_gunicorn", "raw_gunicorn_2w")
SERVERS = (*MCP_AUTH_SERVERS, *RAW_SERVERS, "sdk")
TIMINGS = ("median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_quick_run_measures_every_server(tmp_path: Path) -> None:
    require_redis()  # the session store runs need a redis-server: skipped without one, failed in CI
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())

    assert report["ok"] is True
    assert "json_response=True" in report["sdk_mode"]
    settings = report["settings"]
    assert settings["quick"] is True
    assert set(report["servers"]) == set(SERVERS)
    for key in SERVERS:
        server = report["servers"][key]
        assert server["auth"] == ("bearer" if key in MCP_AUTH_SERVERS else "none")
        latency, throughput, setup = server["latency"], server["throughput"], server["session_setup"]
        assert latency["requested"] == throughput["requested"] == settings["calls"], key
        assert setup["requested"] == settings["sessions"], key
        for name, metric in (("latency", latency), ("throughput", throughput), ("session_setup", setup)):
            assert metric["failed"] == 0, (key, name, metric)
            assert metric["ok"] == metric["requested"], (key, name, metric)
            assert "errors" not in metric, (key, name, metric)
            for timing in TIMINGS:
                assert _positive(metric[timing]), (key, name, timing, metric)
            assert metric["min_ms"] <= metric["median_ms"] <= metric["p95_ms"] <= metric["max_ms"], (key, name)
            # CPU time comes from /proc in 10 ms ticks: present on Linux, possibly 0 in a run this short.
            assert metric.get("server_cpu_ms_per_call", 0) >= 0, (key, name)
        assert throughput["concurrency"] == settings["concurrency"]
        assert _positive(throughput["seconds"]) and _positive(throughput["calls_per_second"]), key
        assert server["exit_status"] is not None, f"{key} was not stopped"

    assert settings["keepalive"] is True and "kept-alive" in settings["client"]
    targets = {target["name"]: target for target in report["targets"]}
    assert set(targets) == {
        "gunicorn 2 workers / 1 worker",
        "gunicorn 2 workers / raw app 2 workers",
        "gunicorn 1 worker / raw app 1 worker",
        "built-in server / SDK",
    }
    for target in targets.values():
        assert _positive(target["ratio"]) and target["met"] == (target["ratio"] >= target["target"]), target
    assert "target gunicorn 2 workers / 1 worker:" in run.stdout
    for key in MCP_AUTH_SERVERS:
        ratios = report["ratios"][key]
        for name in ("call_median", "call_p95", "throughput", "setup_median", "setup_p95"):
            assert _positive(ratios[name]["mcp_auth_over_sdk"]), (key, name)
            assert _positive(ratios[name]["speedup"]), (key, name)
        assert "vs SDK:" in run.stdout and "per call (median)" in run.stdout
    assert set(report["ratios"]) == set(MCP_AUTH_SERVERS)

    # The store runs went through Redis: each of their calls (latency, throughput, setup, readiness) reads
    # the session there, so the server counts well over one command per call (a PING-only Redis would not).
    assert report["store"]["commands_processed"] >= 2 * settings["calls"], report["store"]
    costs = {cost["name"]: cost for cost in report["store_cost"]}
    assert set(costs) == {"1 worker", "2 workers"}
    assert (costs["1 worker"]["without"], costs["1 worker"]["with"]) == ("mcp_auth_gunicorn", "mcp_auth_gunicorn_redis")
    for cost in costs.values():
        assert isinstance(cost["added_call_median_ms"], float) and _positive(cost["throughput_ratio"]), cost
    assert "Redis session store, gunicorn 2 workers: " in run.stdout
    # The stateless servers answered every call in the 2026-07-28 shape (the script checks resultType
    # "complete" on each answer): they are in the table and compared like the others.
    for key in STATELESS_SERVERS:
        assert key in report["ratios"] and report["servers"][key]["label"] in run.stdout, key

    validation = report["validation"]
    assert validation["calls"] == 2000  # the --quick preset
    for name in ("compile_us", "valid_us_per_call", "invalid_us_per_call"):
        assert _positive(validation[name]), (name, validation)
    assert validation["schema"]["properties"]["due_in_days"]["minimum"] == 0
    assert "argument validation (jsonschema Draft 2020-12" in run.stdout


def test_validation_only_runs_no_server(tmp_path: Path) -> None:
    out = tmp_path / "validation.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--validation-only", "--validation-calls", "500", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["ok"] is True and set(report) == {"ok", "validation"}
    assert report["validation"]["calls"] == 500
    assert _positive(report["validation"]["valid_us_per_call"])
    assert "servers:" not in run.stderr
