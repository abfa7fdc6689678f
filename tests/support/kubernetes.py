"""A stand-in for the one piece of Kubernetes that Vault's Kubernetes auth method talks to: the
TokenReview API. It answers ``authenticated: true`` for the service-account tokens it issued.

OpenBao reads the namespace and service account from the JWT's claims and asks TokenReview
whether the token is valid; it does not check the signature itself (no ``pem_keys`` are set),
so the tokens here are signed by a throwaway key that only this stand-in trusts.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import uuid

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.openbao import OpenBao

TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenReviewer:
    """The TokenReview API on a local port; ``issue()`` makes a service-account token it accepts."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._valid: dict[str, dict[str, str]] = {}
        self.reviews = 0  # TokenReviews asked for (one per Vault login)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(TOKENREVIEWS, self._review)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def issue(self, namespace: str, service_account: str) -> str:
        """A new service-account JWT, as the kubelet projects one into a pod."""
        uid = str(uuid.uuid4())
        claims = {
            "iss": "kubernetes/serviceaccount",
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
            "jti": secrets.token_hex(8),
        }
        signing_input = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "."
        signing_input += _b64(json.dumps(claims).encode())
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64(signature)}"
        self._valid[token] = {"username": claims["sub"], "uid": uid}
        return token

    def ca_certificate(self) -> str:
        """A PEM certificate for ``kubernetes_ca_cert`` (required by OpenBao; unused over http)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kubernetes")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def configure(self, bao: OpenBao, role: str, namespace: str, service_account: str, policies: list[str]) -> None:
        """Enable Kubernetes auth in ``bao`` pointing at this stand-in, with ``role`` bound to the account."""
        admin = bao.admin()
        if "kubernetes/" not in admin.sys.list_auth_methods():
            admin.sys.enable_auth_method("kubernetes")
        admin.write_data(
            "auth/kubernetes/config",
            data={
                "kubernetes_host": self.url,
                "kubernetes_ca_cert": self.ca_certificate(),
                "disable_local_ca_jwt": True,
            },
        )
        admin.write_data(
            f"auth/kubernetes/role/{role}",
            data={
                "bound_service_account_names": [service_account],
                "bound_service_account_namespaces": [namespace],
                "token_policies": policies,
                "token_ttl": "1h",
            },
        )

    async def _review(self, request: web.Request) -> web.Response:
        self.reviews += 1
        token = (await request.json())["spec"]["token"]
        user = self._valid.get(token)
        status = {"authenticated": True, "user": {**user, "groups": []}} if user else {"authenticated": False}
        return web.json_response({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
