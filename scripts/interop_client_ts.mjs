// The TypeScript SDK's client (@modelcontextprotocol/sdk) against a live mcp_auth server,
// reported as JSON on stdout (the same report as scripts/interop_client.py).
//
// scripts/client_interop.py installs the pinned SDK with npm into .ci-cache and runs
//     node --experimental-websocket scripts/interop_client_ts.mjs
// with MCP_INTEROP_URL (the server's MCP endpoint), MCP_INTEROP_TOKEN (never a command
// line) and MCP_INTEROP_TS_SDK (the npm prefix that holds the SDK). It does what a user's
// client does over Streamable HTTP, carrying the token the documented way
// (`requestInit: {headers: {Authorization: ...}}`): connect (the initialize handshake),
// list the tools, call `echo` and `whoami`; then it connects once without a token and
// once with a wrong one and records what each refusal looked like to the caller.
//
// WebSocket: the SDK's WebSocketClientTransport takes only a URL and opens a WHATWG
// WebSocket with the subprotocol `mcp`, an API that cannot set a request header, and it
// offers no second subprotocol either, so it has no way to carry a token (neither the
// Authorization header nor the server's `mcp.auth.<token>` subprotocol carrier). The run
// records what that transport gets from the server with auth on: a refused upgrade.
// It asserts nothing: the driver compares the report with what the README promises.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const url = process.env.MCP_INTEROP_URL;
const token = process.env.MCP_INTEROP_TOKEN;
const sdkPrefix = process.env.MCP_INTEROP_TS_SDK;
// A refused connection must fail, never hang.
const STEP_DEADLINE_MS = 60_000;
const ECHO_TEXT = "hello from a real client";

// The SDK lives in the cache, not beside this file: resolve it from there, through its exports map.
const require = createRequire(join(sdkPrefix, "package.json"));
// The package's exports map does not list package.json: read the installed manifest itself.
const sdkManifest = join(sdkPrefix, "node_modules", "@modelcontextprotocol", "sdk", "package.json");
const sdkVersion = JSON.parse(readFileSync(sdkManifest, "utf8")).version;
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { WebSocketClientTransport } = require("@modelcontextprotocol/sdk/client/websocket.js");

const withDeadline = (promise) => {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${STEP_DEADLINE_MS / 1000}s`)), STEP_DEADLINE_MS);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
};

const describe = (error) => `${error?.constructor?.name ?? typeof error}: ${error?.message ?? String(error)}`;

const newClient = () => new Client({ name: "mcp-auth-interop", version: "1.0.0" });

async function session(bearer) {
  const headers = bearer === null ? {} : { Authorization: `Bearer ${bearer}` };
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = newClient();
  try {
    await client.connect(transport);
    const tools = await client.listTools();
    const echo = await client.callTool({ name: "echo", arguments: { text: ECHO_TEXT } });
    const whoami = await client.callTool({ name: "whoami", arguments: {} });
    return {
      protocolVersion: transport.protocolVersion,
      serverName: client.getServerVersion()?.name,
      tools: tools.tools.map((tool) => tool.name).sort(),
      echo: echo.content?.[0]?.text,
      whoami: whoami.structuredContent,
    };
  } finally {
    await client.close().catch(() => {});
  }
}

async function refusal(attempt) {
  try {
    await withDeadline(attempt());
  } catch (error) {
    return describe(error);
  }
  return "connected";
}

async function websocketWithoutToken() {
  if (typeof WebSocket === "undefined") {
    throw new Error("this Node has no WebSocket (run it with --experimental-websocket)");
  }
  const client = newClient();
  try {
    await client.connect(new WebSocketClientTransport(new URL(url.replace(/^http/, "ws"))));
  } finally {
    await client.close().catch(() => {});
  }
}

const report = { client: `@modelcontextprotocol/sdk ${sdkVersion}` };
try {
  Object.assign(report, await withDeadline(session(token)));
} catch (error) {
  report.error = describe(error);
}
report.refusals = {
  "no-token": await refusal(() => session(null)),
  "wrong-token": await refusal(() => session(`wrong-${token}`)),
  "websocket-transport": await refusal(websocketWithoutToken),
};
process.stdout.write(`${JSON.stringify(report)}\n`);
// Nothing may keep the process alive: a lingering socket would hold CI.
process.exit(0);
