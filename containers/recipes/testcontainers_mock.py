# pip install testcontainers requests: start the mock image for one test session.
import requests
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs


def test_renders_a_chart():
    with (
        DockerContainer("localhost/mock-chart-img:dev")
        .with_env("MOCK_CHART_IMG_KEYS", "ci-key:PRO")
        .with_exposed_ports(8080)
    ) as mock:
        wait_for_logs(mock, '"message":"ready"', timeout=30)
        base = f"http://{mock.get_container_host_ip()}:{mock.get_exposed_port(8080)}"
        r = requests.post(f"{base}/v2/tradingview/advanced-chart", headers={"x-api-key": "ci-key"},
                          json={"symbol": "BINANCE:BTCUSDT", "interval": "4h"})
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
