"""Running the app under uvicorn with a graceful SIGTERM drain.

On SIGTERM /readyz turns 503 at once (load balancers stop sending), the server
keeps serving for ``SR_DRAIN_SECONDS``, then stops accepting connections,
finishes every queued and running request, and exits. A second signal exits now.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import uvicorn

from srserve.service import logs
from srserve.service.app import create_app
from srserve.service.batch_runner import Runner
from srserve.service.priority import shorten_gil_turns
from srserve.service.runtime import Runtime
from srserve.service.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, drain_seconds: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.runtime.begin_drain()
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def serve(settings: Settings, runner: Runner | None = None) -> None:
    logs.configure(settings.log_level, settings.log_format)
    shorten_gil_turns(settings.gil_switch_ms)  # the event loop's turn on the GIL (see priority)
    app = create_app(settings, runner)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # logs.configure's handler, for uvicorn's lines too
        access_log=False,  # srserve writes one access line per request (service/access.py)
        timeout_graceful_shutdown=None,
        proxy_headers=True,
    )
    DrainingServer(config, app.state.runtime, settings.drain_seconds).run()
