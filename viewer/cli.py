"""`mil-viewer` / `python run_viewer.py`: serve the viewer for a config, results + slides, or the demo.

Always through gunicorn (a production WSGI server; Linux and macOS), never Flask's development
server, which serves one request at a time and drops the parallel tile requests a Deep Zoom viewer
makes. The cohort is loaded once, before the server starts (so a bad config is reported as one
line, not by every worker), and the workers are forked from that process (`preload_app`).

    python run_viewer.py --config heatmaps/configs/my_config.yaml
    python run_viewer.py --results heatmaps/heatmap_raw_results/EXP --slides /data/slides --port 8000
    python run_viewer.py --demo
    python run_viewer.py --config abmil.yaml --config clam.yaml    # two experiments, compared
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

#: gunicorn's gthread workers read a request's headers in a worker thread: a client that trickles
#: its headers holds a thread until it is done. 32 threads a process keep a viewer answering while
#: a few dozen such connections are open (6-12 starved the old default of 4); behind nginx, which
#: buffers whole requests before passing them on, none reach gunicorn at all.
SLOW_CLIENT_THREADS = 32


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the MIL heatmap viewer for a scored cohort (gunicorn, never the dev server)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config",
        "--config_file",
        dest="config",
        metavar="FILE",
        action="append",
        help="the scoring config (YAML) the cohort was scored with; repeat it to compare "
        "experiments (named by their save_exp_code, which must differ)",
    )
    source.add_argument(
        "--results",
        metavar="DIR",
        action="append",
        help="a raw results experiment folder ({label}/{slide_id}/{slide_id}_blockmap.h5); "
        "needs --slides; repeat it to compare experiments (named by the folders)",
    )
    source.add_argument(
        "--demo", action="store_true", help="serve the demo cohort (built by `make demo`)"
    )
    parser.add_argument(
        "--slides", metavar="DIR", help="the folder holding the slides of --results"
    )
    parser.add_argument(
        "--annotations",
        metavar="DIR",
        help="ground-truth annotations: {slide_id}.geojson (QuPath export) or {slide_id}.xml (ASAP)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="server processes (default: CPU count, at most 4)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=SLOW_CLIENT_THREADS,
        help=f"threads per process (default {SLOW_CLIENT_THREADS}; see the README's deployment notes)",
    )
    parser.add_argument(
        "--timeout", type=int, default=120, help="seconds before a stuck worker is restarted"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.results and not args.slides:
        parser.error("--results DIR needs --slides DIR (the folder holding the slides)")
    if args.slides and not args.results:
        parser.error("--slides DIR goes with --results DIR")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be 1..65535, got {args.port}")
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return args


def viewer_config(args: argparse.Namespace) -> dict[str, Any]:
    """The `create_app` mapping for the chosen cohort source."""
    extra = {"ANNOTATIONS_DIR": args.annotations} if getattr(args, "annotations", None) else {}
    if args.demo:
        return {"DEMO": True, **extra}
    if args.config:
        return {"SCORING_CONFIG": args.config if len(args.config) > 1 else args.config[0], **extra}
    results = args.results if len(args.results) > 1 else args.results[0]
    return {"RESULTS_DIR": results, "SLIDES_DIR": args.slides, **extra}


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def serve_gunicorn(app, args: argparse.Namespace) -> None:
    from gunicorn.app.base import BaseApplication

    class ViewerServer(BaseApplication):
        """gunicorn running an app object built (and validated) before the workers fork."""

        def load_config(self) -> None:
            settings = {
                "bind": bind_address(args.host, args.port),
                "workers": args.workers,
                "worker_class": "gthread",
                "threads": args.threads,
                "timeout": args.timeout,
                "preload_app": True,
                "accesslog": "-" if args.access_log else None,
                "errorlog": "-",
                "loglevel": "info",
            }
            # one shared control socket per user would make two viewers (or a test run beside
            # `make demo`) fight over it; the viewer needs none
            settings["control_socket_disable"] = True
            for key, value in settings.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            return app

    ViewerServer().run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from viewer.app import create_app
    from viewer.errors import ViewerConfigError
    from viewer.state import EXTENSION_KEY

    try:
        import fcntl  # noqa: F401

        import gunicorn  # noqa: F401  (a dependency; it needs fcntl, which Windows lacks)
    except ImportError as exc:
        print(
            f"error: the viewer serves through gunicorn, which cannot run here ({exc}); "
            "it needs Linux or macOS and `make install`",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(viewer_config(args))
    except ViewerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = app.extensions[EXTENSION_KEY]
    for cohort in state.experiments.values():
        readable = sum(r.readable for r in cohort)
        print(
            f"MIL Heatmap Viewer: {cohort.experiment}: {len(cohort)} slides ({readable} readable) "
            f"from {cohort.source}",
            flush=True,
        )
    print(f"  open http://{bind_address(args.host, args.port)}/", flush=True)
    serve_gunicorn(app, args)
    return 0
