"""Bearer tokens: header parsing, matching, and the files that hold tokens.

Modules: `principal` (who a request acts as, scope globs), `bearer` (the
header, token text, new tokens), `files` (secure reading, rotation),
`sources` (the three token sources), `tokensfile` (the tokens-file format and
its editing), `firstrun` (the default token file).

Responsible for
- turning an ``Authorization`` header value into token bytes (`parse_bearer`,
  pipeline step 5),
- deciding which configured credential, if any, those bytes are
  (`TokenSource.authenticate`) and whether a principal's credential still
  exists with the same scope (`TokenSource.is_current`, pipeline step 7),
- the token files: the default token file created on first run, a
  ``--token-file``, and the tokens file of named, hashed, scoped tokens that
  the ``token add|list|revoke`` subcommands edit; rotation by re-reading them
  when they change.

What it trusts
- Nothing in a request. A header value is bounded in length, parsed once, and
  only ever compared as a SHA-256 digest with `hmac.compare_digest`, so neither
  the content nor the length of a configured token shows in response timing,
  and non-ASCII or NUL input cannot raise.
- A token file only when it is a regular file, owned by the user this process
  runs as (or by root, who could replace it anyway), that no one else may
  write (the default token file: that no one else may access at all).
  Otherwise startup fails with a `ConfigError` that names the file and the fix.
  A ``--token-file`` that others may read is accepted (Docker secrets are
  0444) with a warning that names the file and the fix; so is a
  ``--tokens-file`` (hashes, but readable names, scopes and hashes let others
  guess weak tokens offline).
  A file that turns bad after startup makes its source refuse every token
  (fail closed) while the server keeps running; a fixed or rotated file takes
  effect at the next call, without a restart.
- Its own memory, and no further: configured tokens are kept only as SHA-256
  digests. No token, nor any part of one, is logged, printed, put into an
  exception message or shown by a repr. Plaintext leaves this module only as
  a newly generated token returned to the caller that asked for it (first run,
  ``token add``) and through `read_token_file` for ``token show``.
"""

from __future__ import annotations

from .bearer import MAX_AUTHORIZATION_HEADER_CHARS, MAX_TOKEN_CHARS, MIN_TOKEN_CHARS, generate_token, parse_bearer
from .files import read_token_file
from .firstrun import FIRST_RUN_WAIT_SECONDS, default_token_path, ensure_default_token
from .principal import ANONYMOUS, SCOPE_KINDS, Principal
from .sources import StaticToken, TokenFile, TokensFile, TokenSource
from .tokensfile import MAX_NAMED_TOKENS, add_token, list_tokens, revoke_token, rotate_token

__all__ = [
    "ANONYMOUS",
    "FIRST_RUN_WAIT_SECONDS",
    "MAX_AUTHORIZATION_HEADER_CHARS",
    "MAX_NAMED_TOKENS",
    "MAX_TOKEN_CHARS",
    "MIN_TOKEN_CHARS",
    "SCOPE_KINDS",
    "Principal",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "TokensFile",
    "add_token",
    "default_token_path",
    "ensure_default_token",
    "generate_token",
    "list_tokens",
    "parse_bearer",
    "read_token_file",
    "revoke_token",
    "rotate_token",
]
