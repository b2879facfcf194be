"""Slow clients trickling their headers (slowloris) do not starve the viewer as it starts by default."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.conftest import slow_clients
from viewer.background import start_viewer, stop_viewer

SLOW = 24  # the bar is 16


def test_the_default_server_answers_while_slow_clients_hold_connections(viewer_cohort):
    proc, base = start_viewer(
        ["--config", str(viewer_cohort.config)], quiet=True
    )  # default workers, threads
    port = urlsplit(base).port
    try:
        with slow_clients(port, SLOW):
            answered = 0
            for path in ["/api/slides", "/overlay/pyramid_files/13/5_4.png", "/slides/pyramid"] * 4:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    answered += response.status == 200
                finally:
                    conn.close()
            assert answered == 12
    finally:
        stop_viewer(proc)
