"""Shared test pieces: items, a store, and a live waitress server on 127.0.0.1 in a thread."""

from __future__ import annotations

import contextlib
import threading
import urllib.request

from feedalign.serve.storage import Item


def make_items(n_pairs: int = 3, n_single: int = 2) -> list[Item]:
    items = [Item(f"p{i}", f"prompt {i}", f"answer A{i}", f"answer B{i}", round=1) for i in range(n_pairs)]
    items += [Item(f"s{i}", f"single prompt {i}", f"only answer {i}", None, round=2) for i in range(n_single)]
    return items


@contextlib.contextmanager
def live_server(app, threads: int = 8):
    """Yield the base URL of ``app`` served on a free loopback port; stops the server after."""
    from feedalign.serve.app import make_server

    server = make_server(app, "127.0.0.1", 0, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base + "/healthz", timeout=5).read()
                break
        yield base
    finally:
        server.close()
        server.task_dispatcher.shutdown(timeout=5)
        thread.join(timeout=10)
