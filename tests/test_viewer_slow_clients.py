"""Slow clients trickling their headers (slowloris) do not starve the viewer as it starts by default."""
from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import urlsplit

from viewer.background import start_viewer, stop_viewer

SLOW = 24  # the bar is 16


def test_the_default_server_answers_while_slow_clients_hold_connections(viewer_cohort):
    proc, base = start_viewer(["--config", str(viewer_cohort.config)], quiet=True)  # default workers, threads
    port = urlsplit(base).port
    socks = []
    stop = threading.Event()
    try:
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/slides HTTP/1.1\r\nHost: viewer\r\n")
            socks.append(s)

        def trickle() -> None:  # one header byte a second per connection, never a blank line
            while not stop.wait(1.0):
                for s in socks:
                    try:
                        s.sendall(b"X")
                    except OSError:
                        pass
        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1.5)
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
        stop.set()
        for s in socks:
            s.close()
        stop_viewer(proc)
