"""Accounts of the web console and the REST API (issue 19), on both stores: roles, argon2
password hashes, the login rate limit, sessions, CSRF tokens, API tokens, ``synchub users``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from synchub import accounts
from synchub import store as st
from synchub.accounts import AccountError, LoginRefused
from synchub.cli import _run, app
from synchub.exitcodes import FAILED, OK

PASSWORD = "correct horse battery"


def _everything_stored(store: st.Store) -> str:
    """Every value of every account table, as one text (to look for a credential in it)."""
    with store.engine.connect() as conn:
        return json.dumps([[list(r) for r in conn.execute(sa.select(t))]
                           for t in (st.user_t, st.token_t, st.session_t, st.login_failure_t, st.audit_t)], default=str)


def test_roles_and_permissions() -> None:
    table = {role: {p for p, roles in accounts.PERMISSIONS.items() if role in roles} for role in accounts.ROLES}
    assert table["admin"] == set(accounts.PERMISSIONS)
    assert table["steward"] == {"read", "read_personal", "segments", "review", "run"}
    assert table["marketing"] == {"read", "read_personal", "segments"}
    assert table["viewer"] == {"read"}
    assert accounts.User(1, "m", "marketing").can("segments") and not accounts.User(1, "m", "marketing").can("review")


def test_a_password_is_stored_as_an_argon2id_hash_only(store: st.Store) -> None:
    user = accounts.add_user(store, "anna", "steward", PASSWORD, language="de")
    with store.engine.connect() as conn:
        row = st.user_row(conn, name="anna")
    assert row.password_hash.startswith("$argon2id$") and row.role == "steward" and row.language == "de"
    assert PASSWORD not in _everything_stored(store)
    assert accounts.authenticate(store, "anna", PASSWORD, "10.0.0.1") == user
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_user(store, "anna", "viewer", PASSWORD)


@pytest.mark.parametrize(("name", "role", "password", "message"), [
    ("bob", "root", PASSWORD, "unknown role 'root'"),
    ("bob", "viewer", "short", "at least 12 characters"),
    ("bob smith", "viewer", PASSWORD, "invalid user name"),
    ("", "viewer", PASSWORD, "invalid user name"),
])
def test_bad_accounts_are_refused_with_the_reason(store: st.Store, name: str, role: str, password: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        accounts.add_user(store, name, role, password)
    assert accounts.list_users(store) == []


def test_wrong_password_unknown_name_and_disabled_account_get_one_answer(store: st.Store) -> None:
    accounts.add_user(store, "anna", "admin", PASSWORD)
    accounts.add_user(store, "carl", "viewer", PASSWORD)
    answers = set()
    for name, password in (("anna", "wrong password!"), ("nobody", PASSWORD)):
        with pytest.raises(LoginRefused) as refused:
            accounts.authenticate(store, name, password, "10.0.0.1")
        answers.add(str(refused.value))
    accounts.change_user(store, "carl", disabled=True)
    with pytest.raises(LoginRefused) as refused:
        accounts.authenticate(store, "carl", PASSWORD, "10.0.0.2")
    answers.add(str(refused.value))
    assert len(answers) == 1  # the answer never tells which accounts exist
    accounts.change_user(store, "carl", disabled=False)
    assert accounts.authenticate(store, "carl", PASSWORD, "10.0.0.3").name == "carl"


def test_failed_logins_are_rate_limited_per_name_and_per_address(store: st.Store) -> None:
    accounts.add_user(store, "anna", "steward", PASSWORD)
    accounts.add_user(store, "ben", "steward", PASSWORD)
    now = st.utcnow()
    for i in range(accounts.MAX_FAILURES):
        with pytest.raises(LoginRefused, match="wrong"):
            accounts.authenticate(store, "anna", f"guess number {i}", f"10.0.1.{i}", now=now + timedelta(seconds=i))
    # The right password is refused now, from any address, and the answer says until when.
    with pytest.raises(LoginRefused, match="too many failed logins") as refused:
        accounts.authenticate(store, "anna", PASSWORD, "10.9.9.9", now=now + timedelta(seconds=10))
    assert refused.value.retry_after and 0 < refused.value.retry_after <= accounts.FAILURE_WINDOW.total_seconds()
    # Another account is not locked out by anna's attacker...
    assert accounts.authenticate(store, "ben", PASSWORD, "10.9.9.9", now=now + timedelta(seconds=11)).name == "ben"
    # ... and after the window anna logs in again, which clears her failures.
    later = now + accounts.FAILURE_WINDOW + timedelta(seconds=10)
    assert accounts.authenticate(store, "anna", PASSWORD, "10.9.9.9", now=later).name == "anna"
    # One address guessing many names is limited too.
    for i in range(accounts.MAX_FAILURES_PER_ADDRESS):
        with pytest.raises(LoginRefused):
            accounts.authenticate(store, f"user{i}", "nope nope nope", "10.6.6.6", now=later + timedelta(seconds=i))
    with pytest.raises(LoginRefused, match="too many"):
        accounts.authenticate(store, "ben", PASSWORD, "10.6.6.6", now=later + timedelta(seconds=30))


def test_sessions_expire_and_end_and_carry_a_csrf_token(store: st.Store) -> None:
    user = accounts.add_user(store, "anna", "marketing", PASSWORD)
    cookie = accounts.start_session(store, user)
    assert accounts.session_user(store, cookie) == user
    assert cookie not in _everything_stored(store)
    assert accounts.session_user(store, cookie + "x") is None and accounts.session_user(store, "") is None
    late = st.utcnow() + accounts.SESSION_LIFETIME + timedelta(seconds=1)
    assert accounts.session_user(store, cookie, now=late) is None
    token = accounts.csrf_token(cookie)
    assert accounts.csrf_ok(cookie, token)
    assert not accounts.csrf_ok(cookie, None) and not accounts.csrf_ok(cookie, "") and not accounts.csrf_ok(cookie, token[:-1] + ("1" if token[-1] == "0" else "0"))
    assert not accounts.csrf_ok(accounts.start_session(store, user), token)  # another session's token
    accounts.end_session(store, cookie)
    assert accounts.session_user(store, cookie) is None
    # A new password ends every session of the account.
    other = accounts.start_session(store, user)
    accounts.change_user(store, "anna", password="another long password")
    assert accounts.session_user(store, other) is None


def test_api_tokens_are_stored_as_digests_and_die_with_the_account(store: st.Store) -> None:
    accounts.add_user(store, "bot", "viewer", PASSWORD)
    token = accounts.add_token(store, "bot", "nightly export")
    assert token.startswith(accounts.TOKEN_PREFIX) and token not in _everything_stored(store)
    assert accounts.token_user(store, token).name == "bot"
    assert accounts.token_user(store, token[:-2]) is None and accounts.token_user(store, "Bearer") is None
    with store.engine.connect() as conn:
        (row,) = st.token_rows(conn, accounts.get_user(store, "bot").id)
    assert row.last_used_at is not None and row.label == "nightly export"
    accounts.change_user(store, "bot", disabled=True)
    assert accounts.token_user(store, token) is None
    accounts.change_user(store, "bot", disabled=False)
    assert accounts.token_user(store, token) is None  # revoked, not merely paused


def test_the_last_admin_cannot_be_disabled_or_demoted(store: st.Store) -> None:
    accounts.add_user(store, "root", "admin", PASSWORD)
    for change in ({"disabled": True}, {"role": "viewer"}):
        with pytest.raises(AccountError, match="last active admin"):
            accounts.change_user(store, "root", **change)
    accounts.add_user(store, "second", "admin", PASSWORD)
    assert accounts.change_user(store, "root", role="steward").role == "steward"


def test_account_changes_are_audited_with_who_made_them(store: st.Store) -> None:
    accounts.add_user(store, "anna", "viewer", PASSWORD, by="user:root")
    accounts.change_user(store, "anna", role="steward", by="user:root")
    accounts.add_token(store, "anna", "script", by="cli")
    with store.engine.connect() as conn:
        audit = [(r.actor, r.action, r.details) for r in conn.execute(sa.select(st.audit_t).order_by(st.audit_t.c.id))]
    assert audit == [("user:root", "user_add", {"user": "anna", "role": "viewer"}),
                     ("user:root", "user_change", {"user": "anna", "changed": ["role"]}),
                     ("cli", "token_add", {"user": "anna", "label": "script"})]


def test_users_commands(tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "synchub.yaml"
    cfg.write_text(f"store: '{store_url}'\nconnections: {{}}\n", encoding="utf-8")
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(app, ["--config", str(cfg), *args], input=stdin)
        return result.exit_code, result.output

    code, output = run("users", "add", "anna", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == OK and "user anna added (admin)" in output, output
    code, output = run("users", "add", "ben", "--role", "steward", stdin=f"{PASSWORD}\n{PASSWORD}\n")  # asked twice
    assert code == OK, output
    def refused(*args: str) -> str:
        """Through the entry point, which prints what the refusal says and exits with its code."""
        capsys.readouterr()
        assert _run(["--config", str(cfg), *args]) == FAILED
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return err

    assert "unknown role 'boss'" in refused("users", "set", "anna", "--role", "boss")
    code, output = run("--json", "users", "list")
    assert code == OK
    assert [(u["name"], u["role"], u["disabled"]) for u in json.loads(output)["users"]] == [
        ("anna", "admin", False), ("ben", "steward", False)]
    code, output = run("users", "disable", "ben")
    assert code == OK and "disabled" in output
    assert "last active admin" in refused("users", "disable", "anna")
    assert "no user 'zoe'" in refused("users", "token", "zoe")
    code, output = run("users", "token", "anna", "--label", "ci")
    token = output.split()[0]
    assert code == OK and token.startswith(accounts.TOKEN_PREFIX)
    store = st.Store(store_url)
    try:
        assert accounts.token_user(store, token).name == "anna"
        assert accounts.authenticate(store, "anna", PASSWORD, "127.0.0.1").role == "admin"
        with pytest.raises(LoginRefused):
            accounts.authenticate(store, "ben", PASSWORD, "127.0.0.1")
    finally:
        store.dispose()
