"""injector: `podkit inject` as a mutating admission webhook.

The API server sends every Pod CREATE that the MutatingWebhookConfiguration
selects as an AdmissionReview v1 (POST /mutate, HTTPS); the injector answers
with a JSONPatch (RFC 6902) that adds the programs the pod's
`podkit.dev/<program>` annotations ask for, built by the same code as
`podkit inject` (podkit.inject). It never fails a pod: one it does not
understand (not a Pod, bad annotations, anything unexpected) is allowed
unpatched, with a warning the API server shows to kubectl. The certificate
and key are re-read when cert-manager renews them (the admin server's own
TLSFiles).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from podkit import Sidecar, option
from podkit.admin import AdminServer, Request, Response
from podkit.inject import DEFAULT_REGISTRY, InjectError, Settings, pod_patch
from podkit.logs import RateLimited, where
from podkit.program import Program

#: The API server shows at most this much of one warning (k8s.io/apiserver).
MAX_WARNING = 256


class Injector(Sidecar):
    """Inject podkit programs into Pods by annotation: a mutating admission webhook.

    Serves AdmissionReview v1 on --listen over HTTPS (--cert-file, --key-file,
    re-read when they change) at POST /mutate.
    """

    name = "injector"
    examples = """\
podkit injector --cert-file /tls/tls.crt --key-file /tls/tls.key --registry ghcr.io/podkit
podkit inject deploy.yaml | kubectl apply -f -   # the same without a webhook
"""
    default_admin_addr = "127.0.0.1:9418"

    listen: str = option(
        "0.0.0.0:8443", kind="addr", help="HOST:PORT of the webhook (HTTPS, POST /mutate)"
    )
    cert_file: str = option(
        None,
        required=True,
        metavar="FILE",
        kind="path",
        help="the webhook's TLS certificate (PEM, chain), re-read when it changes",
    )
    key_file: str = option(
        None,
        required=True,
        metavar="FILE",
        kind="path",
        help="the certificate's private key (PEM), re-read when it changes",
    )
    registry: str = option(
        DEFAULT_REGISTRY,
        metavar="REGISTRY",
        help="where the images are: REGISTRY/podkit-<program>:<image-version>",
    )
    image_version: str = option(
        None, metavar="TAG", help="tag of the injected images (default: this podkit's version)"
    )
    classic: bool = option(
        False, help="inject sidecars as plain containers, for clusters before 1.29"
    )

    async def setup(self) -> None:
        from podkit import __version__
        from podkit._admin_auth import TLSFiles
        from podkit.validate import _programs

        self.inject_settings = Settings(
            self.registry, self.image_version or __version__, self.classic
        )
        self.programs: dict[str, type[Program]] = _programs()
        self.tls = TLSFiles(self.cert_file, self.key_file)
        self._failures = RateLimited(self.log, 60.0)
        self.m_reviews = self.metrics.counter(
            "reviews_total",
            "AdmissionReviews answered, by result: patched, unchanged, warned "
            "(allowed unpatched with a warning), malformed (HTTP 400).",
            ["result"],
        )
        for result in ("patched", "unchanged", "warned", "malformed"):
            self.m_reviews.labels(result)
        self.server = AdminServer(
            self, self.listen, routes={("POST", "/mutate"): self.mutate}, tls=self.tls
        )
        await self.server.start()
        self.log.info("webhook listening", extra={"addr": self.listen, "port": self.server.port})

    async def run(self) -> None:
        self.set_ready()
        await self.wait_stopping()

    async def cleanup(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            await server.stop()

    def status(self) -> dict[str, Any]:
        return {"listen": self.listen, "port": getattr(getattr(self, "server", None), "port", None)}

    # -- the webhook -----------------------------------------------------------

    async def mutate(self, request: Request) -> Response:
        try:
            review = request.json()
        except ValueError:
            return self._malformed("the body is not JSON")
        req = review.get("request") if isinstance(review, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("uid"), str):
            return self._malformed("not an AdmissionReview v1 with request.uid")
        answer: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        warning = None
        try:
            patch = self.review(req)
        except InjectError as exc:
            patch, warning = [], str(exc)
        except Exception as exc:  # whatever it is, the pod must still be created
            # Whoever reaches the webhook chooses the pod and may send it again:
            # one record a minute per kind, with where it failed, no traceback each.
            self._failures.log(
                type(exc).__name__,
                logging.ERROR,
                "cannot inject",
                uid=req["uid"],
                error=f"{type(exc).__name__}: {exc}"[:300],
                where=where(exc),
            )
            patch, warning = [], f"podkit injector: not injected ({type(exc).__name__}: {exc})"
        if warning:
            self.log.warning("not injected", extra={"uid": req["uid"], "reason": warning})
            answer["warnings"] = [w[:MAX_WARNING] for w in warning.splitlines()]
            self.m_reviews.labels("warned").inc()
        elif patch:
            answer["patchType"] = "JSONPatch"
            answer["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            self.m_reviews.labels("patched").inc()
        else:
            self.m_reviews.labels("unchanged").inc()
        return Response.json(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
        )

    def review(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        """The patch for one request; InjectError says why none can be made."""
        kind = (req.get("kind") or {}).get("kind") if isinstance(req.get("kind"), dict) else None
        pod = req.get("object")
        if kind != "Pod" or not isinstance(pod, dict):
            raise InjectError(f"podkit injector: not a Pod ({kind!r}), left unchanged")
        if req.get("operation", "CREATE") != "CREATE":
            return []
        return pod_patch(pod, self.programs, self.inject_settings)

    def _malformed(self, why: str) -> Response:
        self.m_reviews.labels("malformed").inc()
        return Response.text(f"{why}\n", 400)


def main() -> None:
    Injector.main()
