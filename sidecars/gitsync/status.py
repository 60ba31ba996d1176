"""git-sync's own endpoint on --http-bind: `/` is 503 until the first
successful sync (and while syncs fail past --stale-after), then 200."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podkit.admin import AdminServer, Handler, Request, Response

if TYPE_CHECKING:
    from .program import GitSync


class GitSyncHTTP(AdminServer):
    """git-sync's --http-bind endpoint: `/` is its health check, `/metrics` optional.

    The same small server as the admin port (its limits, its parser), with
    git-sync's routes instead of podkit's: charts point startup and liveness
    probes at `/` on this port.
    """

    def __init__(self, program: GitSync, addr: str, *, metrics: bool) -> None:
        routes: dict[tuple[str, str], Handler] = {("GET", "/"): self.health_check}
        if metrics:
            routes[("GET", "/metrics")] = self.metrics
        super().__init__(program, addr, routes=routes)
        self.gitsync = program

    async def health_check(self, request: Request) -> Response:
        p = self.gitsync
        if not p.ready:
            return Response.text("repo is not ready\n", 503)
        reason = p.health()
        if reason:
            return Response.text(f"{reason}\n", 503)
        return Response(200)
