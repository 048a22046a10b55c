// Preload for the MCP conformance suite: sends a bearer token with its requests.
//
// The suite (@modelcontextprotocol/conformance) has no option for request
// headers, so scripts/conformance.py loads this file with
// NODE_OPTIONS=--import=<this file> to run it against a server with auth on.
// It adds `Authorization: Bearer $CONFORMANCE_AUTH_TOKEN` to
//   - global `fetch` (the SDK client transports the suite uses), and
//   - undici's global dispatcher, as seen by the `undici` package the suite
//     itself imports (resolved from the suite's entry point, process.argv[1]);
//     the DNS-rebinding scenario sends its requests with undici's `request`.
// A request that already carries an Authorization header (any case) keeps it:
// a scenario that sets its own is never overridden. Only requests to
// $CONFORMANCE_AUTH_ORIGIN (the server under test, e.g. http://127.0.0.1:8123)
// get the token, so it never leaves for any other host. Without
// CONFORMANCE_AUTH_TOKEN the preload does nothing.

import { createRequire } from "node:module";

const token = process.env.CONFORMANCE_AUTH_TOKEN;
const origin = process.env.CONFORMANCE_AUTH_ORIGIN;

if (token) {
  if (!origin) {
    throw new Error("conformance_auth.mjs: CONFORMANCE_AUTH_ORIGIN must name the server under test");
  }
  const value = `Bearer ${token}`;
  const forServer = (url) => {
    try {
      return new URL(String(url)).origin === origin;
    } catch {
      return false;
    }
  };

  // Global fetch: add the header unless the caller set one.
  const originalFetch = globalThis.fetch;
  globalThis.fetch = function fetchWithAuth(input, init) {
    const url = input instanceof Request ? input.url : input;
    if (!forServer(url)) {
      return originalFetch(input, init);
    }
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (headers.has("authorization")) {
      return originalFetch(input, init);
    }
    headers.set("authorization", value);
    return originalFetch(input, { ...init, headers });
  };

  // undici's dispatcher options carry headers as a plain object, a flat
  // [name, value, ...] array, an array of [name, value] pairs, or an iterable.
  const hasAuthorization = (headers) => {
    if (headers == null) {
      return false;
    }
    if (Array.isArray(headers)) {
      if (headers.length > 0 && Array.isArray(headers[0])) {
        return headers.some(([name]) => String(name).toLowerCase() === "authorization");
      }
      return headers.some((item, index) => index % 2 === 0 && String(item).toLowerCase() === "authorization");
    }
    if (typeof headers[Symbol.iterator] === "function") {
      return [...headers].some(([name]) => String(name).toLowerCase() === "authorization");
    }
    return Object.keys(headers).some((name) => name.toLowerCase() === "authorization");
  };
  const withAuthorization = (headers) => {
    if (headers == null) {
      return { authorization: value };
    }
    if (Array.isArray(headers)) {
      if (headers.length > 0 && Array.isArray(headers[0])) {
        return [...headers, ["authorization", value]];
      }
      return [...headers, "authorization", value];
    }
    if (typeof headers[Symbol.iterator] === "function") {
      return [...headers, ["authorization", value]];
    }
    return { ...headers, authorization: value };
  };

  // The suite's own undici: the one its entry point resolves.
  let undici;
  try {
    undici = createRequire(process.argv[1])("undici");
  } catch {
    undici = undefined; // a suite version without undici: fetch is covered above
  }
  if (undici) {
    const inner = undici.getGlobalDispatcher();
    undici.setGlobalDispatcher(
      inner.compose((dispatch) => (options, handler) => {
        if (forServer(options.origin) && !hasAuthorization(options.headers)) {
          return dispatch({ ...options, headers: withAuthorization(options.headers) }, handler);
        }
        return dispatch(options, handler);
      }),
    );
  }
}
