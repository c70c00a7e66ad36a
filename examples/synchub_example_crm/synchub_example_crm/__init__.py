"""synchub connector for the Example CRM's persons API: the example of docs/connector-guide.md.

Reads persons incrementally by update time, writes them back with ``POST``/``PUT``, and checks
its token with ``GET /me``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import Field, SecretStr

from synchub.connector import (
    Checkpoint,
    CheckResult,
    Connector,
    ConnectorSettings,
    OutRecord,
    ReadItem,
    Record,
    Rejected,
    Stream,
    StreamSettings,
    WriteResult,
    parse_time,
)
from synchub.errors import AuthError, RetryableError
from synchub.http import RequestRejected, json_object
from synchub.plugins import hookimpl


class CrmSettings(ConnectorSettings):
    token: SecretStr = Field(description="API token of the Example CRM, sent as a bearer token")
    base_url: str = "https://api.example-crm.com/v1"
    page_size: int = Field(default=100, ge=1, le=100, description="Persons per page (the API allows 100)")


class Persons(Stream):
    name = "persons"
    primary_key = ("id",)
    cursor_field = "updated_at"

    def __init__(self, connector: CrmConnector):
        self.connector = connector

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        # The position is (updated_at, id) of the last person yielded. updated_since is inclusive,
        # so persons at that very time come again and the ones up to that id are dropped: a person
        # changed later in the same tick has a higher position (new id) or a later time.
        state = state or {}
        done = (parse_time(state["updated_at"]), state["id"]) if state else None
        params: dict[str, Any] = {"limit": self.connector.settings.page_size}
        if state:
            params["updated_since"] = state["updated_at"]
        while True:
            page = json_object(self.connector.session.get("/persons", params=params), "Example CRM")
            for item in page.get("persons") or []:
                ref = f"example-crm person {item.get('id')}"
                updated = parse_time(item.get("updated_at"))
                if updated is None or not isinstance(item.get("id"), int):
                    yield Rejected(ref=ref, reason="no valid id or updated_at", raw=str(item)[:500])
                    continue
                if done is not None and (updated, item["id"]) <= done:
                    continue  # delivered before the state was saved
                yield Record(item, ref=ref, observed_at=updated)
                state, done = {"updated_at": item["updated_at"], "id": item["id"]}, (updated, item["id"])
            # Everything yielded so far is done: the engine commits it, then saves this state.
            yield Checkpoint(dict(state))
            if not page.get("next_cursor"):
                return
            params = {"cursor": page["next_cursor"]}

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        session = self.connector.session
        for rec in records:
            body = {k: v for k, v in rec.data.items() if not fields or k in fields}
            try:
                if rec.external_id:  # a PUT sets the same values again: safe to retry
                    response = session.request("PUT", f"/persons/{rec.external_id}", json=body)
                else:  # a POST is not retried after a timeout (it could create a duplicate)
                    response = session.post("/persons", json=body)
                saved = json_object(response, "Example CRM")
            except RequestRejected as exc:  # a 4xx for this record only: the others go on
                yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=str(exc),
                                  final=exc.status == 422)
                continue
            except RetryableError as exc:  # retries spent: written again on the next run
                yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=str(exc),
                                  retryable=True)
                continue
            yield WriteResult(rec.golden_id, ok=True, external_id=str(saved["id"]))


class CrmConnector(Connector):
    name = "example_crm"
    Settings = CrmSettings
    StreamSettings = StreamSettings

    def __init__(self, context: Any):
        super().__init__(context)
        s: CrmSettings = self.settings  # type: ignore[assignment]
        client = context.http.build(s.base_url, allowed_hosts=("api.example-crm.com",),
                                    headers={"Authorization": f"Bearer {s.token.get_secret_value()}"})
        self.session = context.http.session(client)

    def streams(self) -> dict[str, Stream]:
        return {"persons": Persons(self)}

    def check(self) -> CheckResult:
        try:
            me = json_object(self.session.get("/me"), "Example CRM")
        except (AuthError, RequestRejected) as exc:
            return CheckResult(ok=False, lines=[f"token rejected: {exc}"])
        return CheckResult(ok=True, lines=[f"signed in as {me.get('name')}", "persons: read write"])

    def close(self) -> None:
        self.session.close()


@hookimpl
def register_connectors() -> list[type[Connector]]:
    return [CrmConnector]
