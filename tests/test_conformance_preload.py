"""scripts/conformance_auth.mjs, the preload that runs the conformance suites with auth on.

The suites send requests three ways: global `fetch`, undici, and (0.2.0-alpha.12's
header scenarios) Node's `http.request` with an options object. A real Node process
with the preload sends each kind to a live mcp_auth server with auth on: every kind
must arrive with the token, a header the caller set must be kept, and a request to
any other origin (a second, header-recording Node server) must never carry the token.
Without the preload the same requests get 401, so each check can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import TOKEN, live_server

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ROOT / "scripts" / "conformance_auth.mjs"

# Sends each kind of request the suites use; prints the statuses (and, for the other origin, the
# Authorization header it received) as one JSON object.
PROBE = r"""
import http from "node:http";
import { get as namedGet, request as namedRequest } from "node:http";

const target = new URL(process.env.PROBE_URL);
const body = JSON.stringify({
  jsonrpc: "2.0", id: 1, method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "probe", version: "1" } },
});
const fetchHeaders = { "Content-Type": "application/json", Accept: "application/json, text/event-stream" };
const headers = { ...fetchHeaders, "Content-Length": Buffer.byteLength(body) };
const options = (extra = {}) => ({
  hostname: target.hostname, port: target.port, path: target.pathname, method: "POST",
  headers: { ...headers, ...extra },
});

// The answer's status and body, for a request made by `start(callback)`.
const answer = (start, payload) => new Promise((resolve, reject) => {
  const outgoing = start((response) => {
    let text = "";
    response.setEncoding("utf8");
    response.on("data", (chunk) => { text += chunk; });
    response.on("end", () => resolve({ status: response.statusCode, text }));
  });
  outgoing.on("error", reject);
  if (payload !== undefined) {
    outgoing.end(payload);
  }
});

// Another origin: a server that answers with the Authorization header it received.
const other = http.createServer((incoming, response) => {
  response.end(JSON.stringify(incoming.headers.authorization ?? null));
});
await new Promise((resolve) => other.listen(0, "127.0.0.1", resolve));
const otherUrl = `http://127.0.0.1:${other.address().port}/mcp`;

const report = {
  options: (await answer((done) => http.request(options(), done), body)).status,
  namedImport: (await answer((done) => namedRequest(options(), done), body)).status,
  urlAndOptions: (await answer((done) => http.request(target, { method: "POST", headers }, done), body)).status,
  callerHeader: (await answer((done) => http.request(options({ authorization: "Bearer wrong-token" }), done), body))
    .status,
  get: (await answer((done) => http.get(target, done))).status,
  namedGet: (await answer((done) => namedGet(target, done))).status,
  fetch: (await fetch(target, { method: "POST", headers: fetchHeaders, body })).status,
  otherRequest: JSON.parse((await answer((done) => http.request(otherUrl, { method: "POST" }, done), "")).text),
  otherGet: JSON.parse((await answer((done) => http.get(otherUrl, done))).text),
  otherFetch: await (await fetch(otherUrl)).json(),
};
other.close();
process.stdout.write(JSON.stringify(report));
"""


def require_node() -> str:
    """Node (20.6+, for --import); else skip, or fail when CI is set (.ci/run needs Node anyway)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed; CI must test the conformance preload")
        pytest.skip("node is not installed")
    return node


def probe(tmp_path: Path, url: str, *, preload: bool) -> dict[str, Any]:
    node = require_node()
    script = tmp_path / "probe.mjs"
    script.write_text(PROBE)
    origin = url.rsplit("/", 1)[0]
    env = {
        **os.environ,
        "PROBE_URL": url,
        "CONFORMANCE_AUTH_TOKEN": TOKEN,
        "CONFORMANCE_AUTH_ORIGIN": origin,
    }
    env.pop("NODE_OPTIONS", None)
    command = [node, *([f"--import={PRELOAD.as_uri()}"] if preload else []), str(script)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_every_kind_of_request_to_the_server_carries_the_token_and_none_to_another_origin(tmp_path: Path) -> None:
    with live_server() as live:
        report = probe(tmp_path, live.url, preload=True)
    assert report["options"] == 200, report  # http.request({hostname, port, ...}): the alpha.12 header scenarios
    assert report["namedImport"] == 200, report
    assert report["urlAndOptions"] == 200, report
    assert report["fetch"] == 200, report
    # GET /mcp without a session is refused, but after the bearer step: not 401.
    assert report["get"] not in (200, 401), report
    assert report["namedGet"] == report["get"], report
    assert report["callerHeader"] == 401, report  # the caller's (wrong) Authorization is kept, not replaced
    assert report["otherRequest"] is None, report
    assert report["otherGet"] is None, report
    assert report["otherFetch"] is None, report


def test_without_the_preload_the_same_requests_get_401(tmp_path: Path) -> None:
    with live_server() as live:
        report = probe(tmp_path, live.url, preload=False)
    for kind in ("options", "namedImport", "urlAndOptions", "fetch", "get", "namedGet", "callerHeader"):
        assert report[kind] == 401, (kind, report)
