"""Request guards of the plugin (plugin.refuse_nul_bytes, plugin.refuse_unknown_actions): bad requests are 4xx,
never a 500 reaching the database or FAB's action lookup."""
from conftest import PASSWORD
from test_login import api_login


def test_api_login_with_a_nul_byte_anywhere_in_the_json_is_400(app, db, staff):
    api = app.test_client()
    for body in ({"username": "a\x00b", "password": PASSWORD, "provider": "db"},
                 {"username": "admin\x00", "password": PASSWORD, "provider": "db"},
                 {"username": "admin", "password": PASSWORD, "provider": "db", "otp": ["1\x002"]},
                 {"username": "admin", "password": PASSWORD, "provider": "db", "x\x00": 1}):
        resp = api.post("/api/v1/security/login", json=body)
        assert resp.status_code == 400, (body, resp.status_code, resp.get_data(as_text=True)[:200])
    assert api_login(api, "admin").status_code == 200  # the same route still works


def test_unknown_fab_action_is_404_not_500(app, db, staff, make_browser):
    admin = make_browser("admin")
    token = admin.session_csrf_token()
    for url in ("/users/action/no_such_action/1", "/roles/action/no_such_action/1"):
        assert admin.client.post(url, data={"csrf_token": token}).status_code == 404, url
    resp = admin.client.post("/users/action_post", data={"csrf_token": token, "action": "no_such", "rowid": "1"})
    assert resp.status_code == 404
    anonymous = app.test_client()
    assert anonymous.get("/users/action/no_such_action/1").status_code == 404
