"""The mock-chart-img image, run as a CI service is: from the environment only (no config file), reached from the
host over its network namespace's address."""

import json
import os
from dataclasses import dataclass, field

import pytest
import requests

from conftest import Netns

KEY = "ci-key"
TOKEN = "ci-admin-token"
# Only environment variables: what `docker run -e …` or a CI `services:` block gives.
ENV = {"MOCK_CHART_IMG_KEYS": f"{KEY}:PRO", "MOCK_CHART_IMG_ADMIN_TOKEN": TOKEN, "MOCK_CHART_IMG_V1": "emulate"}


@dataclass
class Call:
    """One client call and what a good answer is; a new API surface is one more entry of CLIENT_CALLS."""

    name: str
    method: str
    path: str
    headers: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    json: dict = None
    content_type: str = "image/png"


CLIENT_CALLS = [
    Call("v2 advanced chart (x-api-key)", "POST", "/v2/tradingview/advanced-chart", headers={"x-api-key": KEY},
         json={"symbol": "BINANCE:BTCUSDT", "interval": "4h", "studies": [{"name": "Volume"}]}),
    Call("v2 advanced chart (?key=)", "POST", "/v2/tradingview/advanced-chart", params={"key": KEY},
         json={"symbol": "NASDAQ:AAPL", "interval": "1D", "theme": "dark"}),
    # API v1's GET routes, served because MOCK_CHART_IMG_V1=emulate (the legacy API; uncertain upstream).
    Call("v1 mini chart (?key=)", "GET", "/v1/tradingview/mini-chart", params={"key": KEY, "symbol": "BINANCE:BTCUSDT"}),
    Call("v1 advanced chart (Bearer)", "GET", "/v1/tradingview/advanced-chart",
         headers={"Authorization": f"Bearer {KEY}"}, params={"symbol": "NASDAQ:AAPL", "interval": "1D"}),
]


@pytest.fixture(scope="module")
def mock(mock_image):
    ns = Netns()
    proc = mock_image.start(ns, ENV)
    yield mock_image, ns, proc, f"http://{ns.ip}:{mock_image.port()}"
    status = proc.stop()
    ns.close()
    assert status == 0, f"exit status {status} after SIGTERM: {proc.lines}"


def test_the_image_is_small_non_root_and_says_how_to_check_it(mock_image):
    assert mock_image.user.split(":")[0] not in ("", "0", "root"), mock_image.user
    assert mock_image.exposed == [mock_image.port()] == [8080]
    assert mock_image.healthcheck == ["CMD", "/usr/local/bin/mock-chart-img", "healthcheck"]
    assert mock_image.entrypoint == ["/usr/local/bin/mock-chart-img"]
    assert mock_image.size < 64 * 1024 * 1024, mock_image.size
    print(f"\n{mock_image.ref}: {mock_image.size / 1024 / 1024:.1f} MiB")


def test_ready_line_health_and_port(mock):
    image, ns, proc, base = mock
    assert proc.ready["listen"] == "0.0.0.0:8080"
    assert proc.ready["keys"] == 1
    r = requests.get(f"{base}/__admin/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


@pytest.mark.parametrize("call", CLIENT_CALLS, ids=lambda c: c.name)
def test_a_python_client_renders_a_chart(mock, call):
    _, _, _, base = mock
    r = requests.request(call.method, base + call.path, headers=call.headers, params=call.params, json=call.json,
                         timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == call.content_type
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n"), r.content[:16]


def test_a_wrong_key_is_refused_as_the_real_api_does(mock):
    _, _, _, base = mock
    r = requests.post(f"{base}/v2/tradingview/advanced-chart", headers={"x-api-key": "nope"}, json={}, timeout=10)
    assert (r.status_code, r.json()) == (403, {"message": "Forbidden"})


def test_the_admin_api_needs_the_token(mock):
    _, _, _, base = mock
    r = requests.get(f"{base}/__admin/requests", timeout=10)
    assert r.status_code == 401
    assert "Authorization" in r.json()["message"] and TOKEN not in r.text
    r = requests.get(f"{base}/__admin/requests", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    r = requests.get(f"{base}/__admin/requests", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert all(KEY not in json.dumps(e) for e in r.json())
    r = requests.post(f"{base}/__admin/reset", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 204


def test_the_healthcheck_command_exits_0_while_serving(mock):
    image, ns, _, _ = mock
    assert image.run_healthcheck(ns) == (0, "")


def test_the_healthcheck_command_exits_1_when_nothing_serves(mock_image, netns):
    code, err = mock_image.run_healthcheck(netns)
    assert code == 1, err
    assert "127.0.0.1:8080/__admin/health" in err


def test_stored_images_land_in_data_owned_by_the_user(mock):
    image, _, _, base = mock
    r = requests.post(f"{base}/v2/tradingview/advanced-chart/storage", headers={"x-api-key": KEY},
                      json={"symbol": "BINANCE:ETHUSDT"}, timeout=30)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    png = requests.get(url, timeout=10)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    stored = [f for _, _, files in os.walk(os.path.join(image.rootfs, "data")) for f in files]
    assert any(f.endswith(".png") for f in stored), stored
