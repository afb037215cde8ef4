"""The `recorder proxy` image in front of the mock-chart-img image, both in one network namespace (the proxy's
upstream is the mock on the namespace's loopback), reached from the host: a client records a cassette through it."""

import json
import os

import pytest
import requests

KEY = "rec-secret-key"


def test_the_image_is_small_non_root_and_says_how_to_check_it(recorder_image):
    assert recorder_image.user.split(":")[0] not in ("", "0", "root"), recorder_image.user
    assert recorder_image.exposed == [recorder_image.port()] == [8080]
    assert recorder_image.healthcheck == ["CMD", "/usr/local/bin/recorder", "healthcheck"]
    assert recorder_image.entrypoint == ["/usr/local/bin/recorder", "proxy"]
    assert recorder_image.env["RECORDER_PROXY_CASSETTE"].startswith("/cassettes/")
    assert recorder_image.size < 64 * 1024 * 1024, recorder_image.size
    print(f"\n{recorder_image.ref}: {recorder_image.size / 1024 / 1024:.1f} MiB")


def test_records_through_the_proxy_from_the_environment_alone(recorder_image, mock_image, netns):
    mock = mock_image.start(netns, {"MOCK_CHART_IMG_LISTEN": "127.0.0.1:9000", "MOCK_CHART_IMG_KEYS": f"{KEY}:PRO"})
    accounts = json.dumps([{"id": "acc-ci", "apiKey": KEY, "plan": "PRO"}])
    env = {"RECORDER_PROXY_UPSTREAM": "http://127.0.0.1:9000", "CHART_IMG_ACCOUNTS_JSON": accounts}
    proxy = recorder_image.start(netns, env)
    try:
        assert proxy.ready["listen"] == "0.0.0.0:8080"
        base = f"http://{netns.ip}:{recorder_image.port()}"
        health = requests.get(f"{base}/__recorder/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert recorder_image.run_healthcheck(netns, env) == (0, "")
        r = requests.post(f"{base}/v2/tradingview/advanced-chart", headers={"x-api-key": KEY},
                          json={"symbol": "BINANCE:BTCUSDT", "interval": "1h"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.content.startswith(b"\x89PNG")
    finally:
        assert proxy.stop() == 0, proxy.lines
        mock.stop()
    # SIGTERM flushed the cassette into the image's /cassettes, with the key replaced by its placeholder.
    cassette = os.path.join(recorder_image.rootfs, recorder_image.env["RECORDER_PROXY_CASSETTE"].lstrip("/"))
    text = open(os.path.join(cassette, "cassette.json")).read()
    assert "<CHART_IMG_API_KEY:acc-ci>" in text and KEY not in text
    assert KEY not in "\n".join(proxy.lines + mock.lines)
    code, err = recorder_image.run_healthcheck(netns, env)
    assert code == 1, err
