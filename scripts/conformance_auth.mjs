// Preload for the MCP conformance suite: sends a bearer token with its requests.
//
// The suite (@modelcontextprotocol/conformance) has no option for request
// headers, so scripts/conformance.py loads this file with
// NODE_OPTIONS=--import=<this file> to run it against a server with auth on.
// It adds `Authorization: Bearer $CONFORMANCE_AUTH_TOKEN` to
//   - global `fetch` (the SDK client transports the suite uses), and
//   - undici's global dispatcher, as seen by the `undici` package the suite
//     itself imports (resolved from the suite's entry point, process.argv[1]);
//     the DNS-rebinding scenario sends its requests with undici's `request`;
//   - `request` and `get` of Node's `node:http` module: 0.2.0-alpha.12's header
//     scenarios (http-header-validation, http-custom-header-server-validation)
//     send their raw cases with `http.request({hostname, port, path, headers})`,
//     which neither hook above sees (without this every raw case gets a 401).
// A request that already carries an Authorization header (any case) keeps it:
// a scenario that sets its own is never overridden. Only requests to
// $CONFORMANCE_AUTH_ORIGIN (the server under test, e.g. http://127.0.0.1:8123)
// get the token, so it never leaves for any other host. Without
// CONFORMANCE_AUTH_TOKEN the preload does nothing.

import http from "node:http";
import { createRequire, syncBuiltinESMExports } from "node:module";

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

  // node:http. The target of `request(options)` is protocol + hostname (or host) + port; of
  // `request(url[, options])` the URL, with the options' fields over it (as Node does).
  const defaultPort = { "http:": "80", "https:": "443" };
  const originOf = (target) => {
    const protocol = target.protocol || "http:";
    let host = String(target.hostname || target.host || "localhost");
    if (host.includes(":") && !host.startsWith("[")) {
      host = `[${host}]`; // an IPv6 address, as a URL spells it
    }
    const port = target.port == null || target.port === "" ? defaultPort[protocol] : String(target.port);
    return `${protocol}//${host}:${port}`;
  };
  const originalRequest = http.request;
  const requestWithAuth = function requestWithAuth(...args) {
    const urlGiven = typeof args[0] === "string" || args[0] instanceof URL;
    const url = urlGiven ? new URL(String(args[0])) : undefined;
    const optionsIndex = urlGiven ? 1 : 0;
    const options = args[optionsIndex] != null && typeof args[optionsIndex] === "object" ? args[optionsIndex] : {};
    const target = url
      ? { protocol: url.protocol, hostname: url.hostname, port: url.port, ...options }
      : { ...options, protocol: options.protocol ?? options.agent?.protocol };
    if (!forServer(originOf(target)) || hasAuthorization(options.headers)) {
      return originalRequest.apply(this, args);
    }
    const withHeader = { ...options, headers: withAuthorization(options.headers) };
    const rest = args[optionsIndex] === options ? args.slice(optionsIndex + 1) : args.slice(optionsIndex);
    return originalRequest.call(this, ...(url ? [args[0]] : []), withHeader, ...rest);
  };
  // Node's own `get` calls its module-internal `request`, which the replacement above does not reach.
  const getWithAuth = function getWithAuth(...args) {
    const outgoing = requestWithAuth.apply(this, args);
    outgoing.end();
    return outgoing;
  };
  http.request = requestWithAuth;
  http.get = getWithAuth;
  // The suite's bundle reads `http.request` off the default export at call time; named
  // imports (`import { request } from "node:http"`) see the wrappers after this sync.
  syncBuiltinESMExports();
}
