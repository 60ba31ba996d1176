"""proxy: a localhost ambassador for the app's outbound HTTP and TCP connections.

The app talks to 127.0.0.1; the proxy brokers each request (or TCP connection)
to the real upstreams, adding what the app should not have to know: which
replicas exist, retries, timeouts, outlier ejection, TLS and credentials.

The package, by dependency direction: `program` (options, listeners, workers,
metrics) uses `httpproxy` (HTTP mode) and `tcp` (TCP mode), which use
`listener`, `upstream` and `http1` (the wire format). This file only re-exports.
"""

from __future__ import annotations

from .program import Proxy, main

__all__ = ["Proxy", "main"]
