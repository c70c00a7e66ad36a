"""Accounts of the web console and the REST API: roles, passwords, API tokens, sessions.

Roles (issue 19):

``admin``
    everything: users, settings, every decision.
``steward``
    reviews and resolves conflicts, merges and splits customers.
``marketing``
    reads customers, segments and the needs-re-opt-in lists; makes no decisions.
``viewer``
    reads only; sees no personal data beyond names if the console is configured so.

What a role may do is the :data:`PERMISSIONS` table; every route of the console names one
permission, so the route table and this table are the whole access policy.

Credentials are never stored in clear text: passwords as argon2id hashes (argon2-cffi, the
reference implementation's binding, with its current default parameters; a hash made with
older parameters is upgraded at the next successful login), API tokens and session cookies
as SHA-256 digests (they are 256-bit random strings, so a fast digest is enough). Failed
logins are counted per account name and per client address: after :data:`MAX_FAILURES` for a
name (:data:`MAX_FAILURES_PER_ADDRESS` for an address) in :data:`FAILURE_WINDOW` the login is refused, even with the right password, until the window
has passed; every refusal says when to try again and never whether the name exists.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from synchub import store as st
from synchub.errors import SynchubError

ROLES = ("admin", "steward", "marketing", "viewer")

#: permission -> roles that have it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),  # customers by name, runs, counts
    "read_personal": frozenset({"admin", "steward", "marketing"}),  # e-mail, phone, address, consent
    "segments": frozenset({"admin", "steward", "marketing"}),  # segment counts, re-opt-in export
    "review": frozenset({"admin", "steward"}),  # resolve conflicts, merge, keep apart, split
    "run": frozenset({"admin", "steward"}),  # re-run a connection
    "admin": frozenset({"admin"}),  # users, tokens of others, settings
    "privacy": frozenset({"admin"}),  # a person's data export, erasure, erasure receipts
}

MIN_PASSWORD = 12
MAX_FAILURES = 5  # per account name
MAX_FAILURES_PER_ADDRESS = 20  # per client address (an office behind one NAT)
FAILURE_WINDOW = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=12)
LANGUAGES = ("de", "en")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
TOKEN_PREFIX = "shk_"


class AccountError(SynchubError):
    """An account cannot be created or changed as asked (bad name, role, password)."""


class LoginRefused(SynchubError):
    """A login failed. The message never says whether the account exists."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    language: str | None = None
    disabled: bool = False
    #: permissions granted beyond the role's by configuration (``web.viewers_see_personal_data``)
    grants: frozenset[str] = frozenset()

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission] or permission in self.grants

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(row.id, row.name, row.role, row.language, bool(row.disabled))


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_language(language: str | None) -> str | None:
    if language is not None and language not in LANGUAGES:
        raise AccountError(f"unknown language {language!r}: one of {', '.join(LANGUAGES)}")
    return language


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


def _audit(conn: sa.Connection, now: datetime, by: str, action: str, **details: Any) -> None:
    st.insert_audit(conn, [{"at": now, "actor": by, "action": action, "golden_id": None, "details": details}])


def add_user(store: st.Store, name: str, role: str, password: str, *, language: str | None = None,
             by: str = "cli") -> User:
    """Create an account (audited). The password is hashed before it reaches the store."""
    if not _NAME.match(name):
        raise AccountError(f"invalid user name {name!r}: letters, digits and . _ @ - (at most 100)")
    check_role(role)
    check_password(password)
    check_language(language)
    hashed = hash_password(password)
    now = st.utcnow()
    try:
        with store.begin() as conn:
            user_id = st.insert_user(conn, name, role, hashed, language, now)
            _audit(conn, now, by, "user_add", user=name, role=role)
    except sa.exc.IntegrityError:
        raise AccountError(f"user {name!r} exists already") from None
    return User(user_id, name, role, language)


def get_user(store: st.Store, name: str) -> User:
    with store.engine.connect() as conn:
        row = st.user_row(conn, name=name)
    if row is None:
        raise AccountError(f"no user {name!r}")
    return User.from_row(row)


def list_users(store: st.Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [{"name": r.name, "role": r.role, "language": r.language, "disabled": bool(r.disabled),
                 "created_at": r.created_at} for r in st.user_rows(conn)]


def change_user(store: st.Store, name: str, *, by: str = "cli", role: str | None = None,
                disabled: bool | None = None, password: str | None = None, language: str | None = None) -> User:
    """Change an account (audited). Disabling it ends its sessions and revokes its tokens."""
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = check_role(role)
    if disabled is not None:
        values["disabled"] = disabled
    if password is not None:
        values["password_hash"] = hash_password(check_password(password))
    if language is not None:
        values["language"] = check_language(language)
    now = st.utcnow()
    with store.begin() as conn:
        row = st.user_row(conn, name=name)
        if row is None:
            raise AccountError(f"no user {name!r}")
        if row.role == "admin" and (values.get("role", "admin") != "admin" or values.get("disabled")):
            admins = [u for u in st.user_rows(conn) if u.role == "admin" and not u.disabled and u.id != row.id]
            if not admins:
                raise AccountError(f"{name!r} is the last active admin: add another admin first")
        st.update_user(conn, row.id, now, **values)
        if values.get("disabled") or "password_hash" in values:
            st.delete_sessions(conn, user_id=row.id)
        if values.get("disabled"):
            st.revoke_tokens(conn, row.id)
        _audit(conn, now, by, "user_change", user=name,
               changed=sorted(k if k != "password_hash" else "password" for k in values))
        row = st.user_row(conn, user_id=row.id)
    return User.from_row(row)


# ----- logging in -----------------------------------------------------------------------------

#: Verified when the account does not exist, so that both cases take the same time.
_DUMMY_HASH: str | None = None


def authenticate(store: st.Store, name: str, password: str, address: str, *, now: datetime | None = None) -> User:
    """The account if ``password`` is right and the account may log in; else :class:`LoginRefused`."""
    global _DUMMY_HASH
    from argon2.exceptions import VerificationError

    now = now or st.utcnow()
    since = now - FAILURE_WINDOW
    # The typed name is kept only as a digest: people type their password into it by mistake.
    who = _digest("login:" + name)
    # This attempt counts as a failure before the password is checked, so parallel guesses
    # cannot all pass the count before any of them is recorded; a success takes it back.
    with store.begin() as conn:
        st.insert_login_failure(conn, who, address, now)
    with store.engine.connect() as conn:
        by_name = st.login_failures(conn, since=since, name=who)
        by_address = st.login_failures(conn, since=since, address=address)
        row = st.user_row(conn, name=name)
    for failures, limit in ((by_name, MAX_FAILURES), (by_address, MAX_FAILURES_PER_ADDRESS)):
        if len(failures) > limit:  # this attempt included
            # the next attempt passes once the limit-th latest failure has left the window
            retry = max(1, int((sorted(failures)[-limit] + FAILURE_WINDOW - now).total_seconds()) + 1)
            raise LoginRefused(f"too many failed logins: try again in {retry} seconds", retry_after=retry)
    hasher = _hasher()
    ok = False
    if row is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hasher.hash(secrets.token_hex(16))
        try:
            hasher.verify(_DUMMY_HASH, password)
        except VerificationError:
            pass
    else:
        try:
            ok = bool(hasher.verify(row.password_hash, password))
        except VerificationError:
            ok = False
    if not ok or row is None or row.disabled:
        with store.begin() as conn:
            st.forget_login_failures(conn, before=now - 4 * FAILURE_WINDOW)
        raise LoginRefused("wrong user name or password, or the account is disabled")
    with store.begin() as conn:
        st.forget_login_failures(conn, before=now, name=who)  # this attempt's row included
        if hasher.check_needs_rehash(row.password_hash):
            st.update_user(conn, row.id, now, password_hash=hasher.hash(password))
    return User.from_row(row)


def start_session(store: st.Store, user: User, *, now: datetime | None = None) -> str:
    """A new session for ``user``: returns the cookie value (only its digest is stored)."""
    now = now or st.utcnow()
    token = secrets.token_urlsafe(32)
    with store.begin() as conn:
        st.insert_session(conn, _digest(token), user.id, now, now + SESSION_LIFETIME)
    return token


def session_user(store: st.Store, token: str, *, now: datetime | None = None) -> User | None:
    """The live, enabled account of a session cookie, or ``None``."""
    if not token:
        return None
    with store.engine.connect() as conn:
        row = st.session_user(conn, _digest(token), now or st.utcnow())
    return User.from_row(row) if row is not None and not row.disabled else None


def end_session(store: st.Store, token: str) -> None:
    with store.begin() as conn:
        st.delete_sessions(conn, id_hash=_digest(token))


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from the session cookie, which a page on another
    site can neither read nor guess, so it needs no storage."""
    return hmac.new(session_token.encode("utf-8"), b"synchub-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, given: str | None) -> bool:
    if not given:
        return False
    # as bytes: compare_digest refuses non-ASCII text, and a header may hold anything
    return hmac.compare_digest(csrf_token(session_token).encode(), given.encode("utf-8", "replace"))


def add_token(store: st.Store, name: str, label: str, *, by: str = "cli") -> str:
    """A new API token for account ``name``; the token is returned once and stored as a digest."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = st.utcnow()
    with store.begin() as conn:
        row = st.user_row(conn, name=name)
        if row is None:
            raise AccountError(f"no user {name!r}")
        if row.disabled:
            raise AccountError(f"user {name!r} is disabled")
        st.insert_token(conn, row.id, label[:100], _digest(token), now)
        _audit(conn, now, by, "token_add", user=name, label=label[:100])
    return token


def token_user(store: st.Store, token: str) -> User | None:
    """The enabled account of a live API token, or ``None``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with store.begin() as conn:
        row = st.token_user(conn, _digest(token), st.utcnow())
    return User.from_row(row) if row is not None and not row.disabled else None
