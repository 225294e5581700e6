"""Who can reach a study: its owner's key, keys it was granted to, admin keys; sessions signed with the
server's secret (issue 11, item 4)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from fastapi.testclient import TestClient
from survey_support import create_study, new_key, open_study, survey_api

from worker import db


@pytest.fixture
def api(tmp_path):
    with survey_api(tmp_path) as client:
        yield client


def _mac(key: str, message: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()).decode() \
        .rstrip("=")


def _stored_key(api):
    from app.keys import ApiKey, hash_key

    with db.session_scope(api.settings.database_url) as s:
        row = s.query(ApiKey).filter(ApiKey.key_hash == hash_key(api.key)).one()
        return row.id, row.key_hash


def test_a_session_minted_from_the_stored_key_hash_is_refused(api):
    key_id, key_hash = _stored_key(api)  # all a reader of the database has
    expires = int(time.time()) + 3600
    for message in (f"researcher|{key_id}|{expires}", f"researcher|{key_id}|{key_hash}|{expires}"):
        forged = f"{key_id}.{expires}.{_mac(key_hash, message)}"
        web = TestClient(api.app, cookies={"rg_researcher": forged})
        assert web.get("/v1/surveys").status_code == 401
        assert web.get("/researcher/surveys", follow_redirects=False).status_code == 303


def test_a_signed_in_session_works_and_is_bound_to_the_server_secret(api, tmp_path):
    web = TestClient(api.app)
    web.post("/researcher/login", data={"api_key": api.key})
    assert web.get("/v1/surveys").status_code == 200
    assert (api.settings.data_dir / "secret_key").stat().st_mode & 0o077 == 0  # only the owner reads it

    from app.main import create_app

    other = create_app(api.settings.replace(secret_key="x" * 64), run_reaper=False)  # another server's secret
    with TestClient(other, cookies=dict(web.cookies)) as elsewhere:
        assert elsewhere.get("/v1/surveys").status_code == 401


def test_a_short_secret_is_refused_naming_the_variable():
    from worker.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="RGUIDE_SECRET_KEY"):
        Settings.from_env({"RGUIDE_SECRET_KEY": "short"})


def _admin_key(settings) -> str:
    from app.keys import create_key

    with db.session_scope(settings.database_url) as s:
        return create_key(s, "admin", admin=True)[1]


READS = ["", "/manifest", "/votes", "/votes?format=json", "/results?n_boot=0", "/report?n_boot=0"]


def test_another_labs_key_can_neither_read_nor_close_a_study(api):
    study = open_study(api, api.key, num_pairs=2)
    mine = {"Authorization": f"Bearer {api.key}"}
    other = {"Authorization": f"Bearer {new_key(api.settings, 'other lab')}"}
    for suffix in READS:
        # The owner gets the resource (or 409 "no votes yet" for the statistics), never a 404.
        assert api.get(f"/v1/surveys/{study['id']}{suffix}", headers=mine).status_code in (200, 409), suffix
        r = api.get(f"/v1/surveys/{study['id']}{suffix}", headers=other)
        assert r.status_code == 404 and "no survey with id" in r.text, suffix
    assert api.post(f"/v1/surveys/{study['id']}/close", headers=other).status_code == 404
    assert api.get(f"/v1/surveys/{study['id']}", headers=mine).json()["status"] == "open"
    assert [s["id"] for s in api.get("/v1/surveys", headers=other).json()["items"]] == []
    assert [s["id"] for s in api.get("/v1/surveys", headers=mine).json()["items"]] == [study["id"]]
    # The researcher pages apply the same rule.
    web = TestClient(api.app)
    web.post("/researcher/login", data={"api_key": other["Authorization"][7:]})
    assert study["id"] not in web.get("/researcher/surveys").text
    assert web.get(f"/researcher/surveys/{study['id']}").status_code == 404


def test_a_grant_and_an_admin_key_open_other_labs_studies(api):
    from app.keys import lookup_key
    from app.survey import access
    from app.survey.studies import get_study

    study = create_study(api, api.key, num_pairs=2)
    other_plain = new_key(api.settings, "collaborator")
    other = {"Authorization": f"Bearer {other_plain}"}
    admin = {"Authorization": f"Bearer {_admin_key(api.settings)}"}
    assert api.get(f"/v1/surveys/{study['id']}", headers=admin).status_code == 200
    assert [s["id"] for s in api.get("/v1/surveys", headers=admin).json()["items"]] == [study["id"]]
    assert api.get(f"/v1/surveys/{study['id']}", headers=other).status_code == 404
    with db.session_scope(api.settings.database_url) as s:
        assert access.grant(s, get_study(s, study["id"]), lookup_key(s, other_plain[:10])) is True
    assert api.get(f"/v1/surveys/{study['id']}", headers=other).status_code == 200
    with db.session_scope(api.settings.database_url) as s:
        assert access.revoke_grant(s, get_study(s, study["id"]), lookup_key(s, other_plain[:10])) is True
    assert api.get(f"/v1/surveys/{study['id']}", headers=other).status_code == 404


def test_rguide_keys_grant_and_admin_from_the_command_line(api, tmp_path, monkeypatch, capsys):
    from rguide.cli import main

    study = create_study(api, api.key, num_pairs=2)
    other_plain = new_key(api.settings, "collaborator")
    monkeypatch.setenv("DATABASE_URL", api.settings.database_url)
    monkeypatch.setenv("RGUIDE_DATA_DIR", str(api.settings.data_dir))
    assert main(["keys", "grant", study["id"], other_plain[:10]]) == 0
    assert "granted study" in capsys.readouterr().out
    assert api.get(f"/v1/surveys/{study['id']}", headers={"Authorization": f"Bearer {other_plain}"}).status_code == 200
    assert main(["keys", "grant", "f" * 32, other_plain[:10]]) == 2
    assert main(["keys", "create", "--name", "ops", "--admin"]) == 0
    assert main(["keys", "list"]) == 0
    assert "admin" in capsys.readouterr().out
