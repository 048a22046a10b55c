"""Token sources: which configured credential presented bytes are, and whether it still is.

`TokenSource.authenticate` (step 5) and `TokenSource.is_current` (step 7) for
one static token, a token file and the tokens file of named, scoped tokens.
Configured tokens are kept only as SHA-256 digests.
"""

from __future__ import annotations

import abc
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from .bearer import _NAME_RE, _NAME_RULE, _check_token_text, _same_id, _sha256
from .files import _first_line_token, _token_file_rules, _WatchedFile, _where
from .principal import Principal
from .tokensfile import _parse_tokens_document, _tokens_file_rules


def _still_the_same(principal: Principal, configured: Principal) -> bool:
    """Whether `principal` is what the configuration now says: same name, credential and scope.

    The scope counts too: a token whose patterns were edited in the file must
    not keep its old (perhaps wider) scope in an open session or WebSocket.
    """
    return (
        principal.name == configured.name
        and _same_id(principal.credential_id, configured.credential_id)
        and principal.tool_patterns == configured.tool_patterns
    )


@dataclass(frozen=True)
class _Credential:
    digest: bytes = field(repr=False)  # SHA-256 of the token
    principal: Principal


def _credential(token: bytes, name: str, tool_patterns: tuple[str, ...] | None) -> _Credential:
    digest = _sha256(token)
    return _Credential(digest, Principal(name, tool_patterns, digest.hex()))


class TokenSource(abc.ABC):
    """Where the configured tokens come from; one per running server."""

    # Names the source in the startup summary, e.g. "MCP_AUTH_TOKEN"; never a token.
    description: str

    @abc.abstractmethod
    def authenticate(self, presented: bytes) -> Principal | None:
        """The principal whose token is `presented`, or None."""

    @abc.abstractmethod
    def is_current(self, principal: Principal) -> bool:
        """Whether `principal` is still valid (step 7): its credential not revoked, its scope not changed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(description={self.description!r})"


class StaticToken(TokenSource):
    """One token given at startup: ``--token`` or ``MCP_AUTH_TOKEN``."""

    def __init__(self, token: str, description: str, name: str = "default") -> None:
        self.description = description
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{description}: the token name must match {_NAME_RULE}")
        # Only the digest is kept: the plaintext is not needed after this line.
        self._credential = _credential(_check_token_text(token.strip(), description), name, None)

    def authenticate(self, presented: bytes) -> Principal | None:
        if hmac.compare_digest(_sha256(presented), self._credential.digest):
            return self._credential.principal
        return None

    def is_current(self, principal: Principal) -> bool:
        return _still_the_same(principal, self._credential.principal)


class TokenFile(TokenSource):
    """One token: the first line of a file (``--token-file`` or the default token file).

    `default_file` applies the default token file's rules: no group or other
    access at all, and "delete it to regenerate" as the fix for an empty file.
    `expected_uid` is the owner the file must have (default: this process's
    effective uid; root-owned files are accepted too).
    """

    def __init__(
        self, path: Path, description: str, *, default_file: bool = False, expected_uid: int | None = None
    ) -> None:
        self.description = description
        self.path = Path(path)
        self.default_file = default_file
        where = _where(description, self.path)
        rules, empty_fix = _token_file_rules(self.path, default_file)

        def parse(data: bytes) -> _Credential:
            return _credential(_first_line_token(data, where, empty_fix), "default", None)

        self._file = _WatchedFile(self.path, where, rules, parse, expected_uid)

    def authenticate(self, presented: bytes) -> Principal | None:
        digest = _sha256(presented)
        credential = self._file.current()
        if credential is not None and hmac.compare_digest(digest, credential.digest):
            return credential.principal
        return None

    def is_current(self, principal: Principal) -> bool:
        credential = self._file.current()
        return credential is not None and _still_the_same(principal, credential.principal)


@dataclass(frozen=True)
class _NamedCredentials:
    credentials: tuple[_Credential, ...]
    principal_by_name: Mapping[str, Principal]


class TokensFile(TokenSource):
    """Named tokens stored as SHA-256 hashes with optional tool scopes (``--tokens-file``)."""

    def __init__(self, path: Path, description: str, *, expected_uid: int | None = None) -> None:
        self.description = description
        self.path = Path(path)
        where = _where(description, self.path)

        def parse(data: bytes) -> _NamedCredentials:
            credentials = tuple(
                _Credential(bytes.fromhex(t.sha256), Principal(t.name, t.tools, t.sha256))
                for t in _parse_tokens_document(data, where)
            )
            return _NamedCredentials(credentials, {c.principal.name: c.principal for c in credentials})

        self._file = _WatchedFile(self.path, where, _tokens_file_rules(self.path), parse, expected_uid)
        # Emptied by revocation while running, the file just refuses everyone;
        # empty at startup, the server could never be used, which is a mistake.
        if not self._file.state_at_start.credentials:
            raise ConfigError(
                f"{where}: has no tokens; add one with: python -m mcp_auth token add NAME --tokens-file {self.path}"
            )

    def authenticate(self, presented: bytes) -> Principal | None:
        digest = _sha256(presented)
        state = self._file.current()
        if state is None:
            return None
        found: Principal | None = None
        for credential in state.credentials:
            # Compare against every entry, match or not: the time taken must not
            # depend on where (or whether) the token sits in the list.
            if hmac.compare_digest(digest, credential.digest) and found is None:
                found = credential.principal
        return found

    def is_current(self, principal: Principal) -> bool:
        state = self._file.current()
        if state is None:
            return False
        configured = state.principal_by_name.get(principal.name)
        return configured is not None and _still_the_same(principal, configured)
