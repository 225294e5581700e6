"""Who can reach a study: researcher sessions signed with the server's secret (issue 11, item 4)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from fastapi.testclient import TestClient
from survey_support import new_key, sqlite_settings

from worker import db


@pytest.fixture
def api(tmp_path):
    settings = sqlite_settings(tmp_path)
    from app.main import create_app

    with TestClient(create_app(settings, run_reaper=False)) as client:
        client.settings = settings
        client.key = new_key(settings)
        yield client
    db.dispose_engines()


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
