"""A local HTTP server for tests: serve a stub on 127.0.0.1 in a background thread."""

import contextlib
import threading


@contextlib.contextmanager
def serving(httpd):
    """Serve ``httpd`` (an ``http.server`` server bound to 127.0.0.1) for the block, then shut it down."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
