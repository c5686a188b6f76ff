"""Fan in the buses of many boxes: one XSUB connected to every box, one XPUB for the site's subscribers.

ZeroMQ's own proxy does the work: subscriptions travel upstream to each box,
messages downstream unchanged (topics carry the stream id, so stream ids must be
unique across the boxes). With CurveZMQ, the aggregator is a client of each box
and a server to its own subscribers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import zmq

from pipeline.curve import CurveClient, CurveServer, ServerContext
from pipeline.errors import PublishError

log = logging.getLogger(__name__)


class Aggregator:
    """Runs ``zmq.proxy_steerable(XSUB, XPUB)`` in a thread until :meth:`close`."""

    def __init__(
        self,
        upstream: Sequence[str],
        bind: str,
        *,
        client: CurveClient | None = None,
        server: CurveServer | None = None,
    ) -> None:
        if not upstream:
            raise PublishError("aggregate: give at least one --from endpoint")
        self._ctx = ServerContext(server)
        self._xsub = self._ctx.socket(zmq.XSUB, server=False)  # a client of each box
        self._xpub = self._ctx.socket(zmq.XPUB)  # a server to the site's subscribers
        self._control = self._ctx.socket(zmq.PAIR, server=False)
        self._control_addr = f"inproc://aggregate-control-{id(self)}"
        self._control.bind(self._control_addr)
        if client is not None:
            client.apply(self._xsub)
        try:
            self._xpub.bind(bind)
        except zmq.ZMQError as exc:
            self.close()
            raise PublishError(f"aggregate: cannot bind '{bind}': {exc}") from exc
        for endpoint in upstream:
            self._xsub.connect(endpoint)
        self.upstream = list(upstream)
        self.bind = bind
        self._thread = threading.Thread(target=self._run, name="aggregate", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("aggregating %d bus(es) onto %s", len(self.upstream), self.bind)

    def _run(self) -> None:
        steer = self._ctx.zmq.socket(zmq.PAIR)
        steer.connect(self._control_addr)
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, steer)
        except zmq.ContextTerminated:
            pass
        finally:
            steer.close(linger=0)

    def close(self) -> None:
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join(5)
        for sock in (self._xsub, self._xpub, self._control):
            sock.close(linger=0)
        self._ctx.term()
