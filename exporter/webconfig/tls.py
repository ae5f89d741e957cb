"""TLS: the server's ssl.SSLContext from tls_server_config, with every file checked at load."""

from __future__ import annotations

import ssl
from pathlib import Path

from .model import TLSServerModel, WebConfigError

_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


def _resolve(base: Path, value: str | None) -> Path | None:
    # Relative to the config file's folder, as exporter-toolkit does.
    return None if value is None else base / Path(value).expanduser()


def _encrypted_key() -> bytes:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    """Raised by the password callback: prompting on a terminal would hang a service."""


def _readable(path: Path, config: Path, key: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise WebConfigError(
            f"{config}: tls_server_config.{key}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def build_ssl_context(config: Path, tls: TLSServerModel) -> tuple[ssl.SSLContext, list[Path]]:
    base = config.parent
    cert = _resolve(base, tls.cert_file)
    key = _resolve(base, tls.key_file)
    ca_file = _resolve(base, tls.client_ca_file)
    if cert is None:
        raise WebConfigError(f"{config}: tls_server_config.cert_file is required when TLS is on")
    if key is None:
        raise WebConfigError(f"{config}: tls_server_config.key_file is required when TLS is on")
    if ca_file is not None and tls.client_ca is not None:
        raise WebConfigError(
            f"{config}: tls_server_config: set client_ca_file or client_ca, not both"
        )
    _readable(cert, config, "cert_file")
    _readable(key, config, "key_file")

    minimum, maximum = _TLS_VERSIONS[tls.min_version], _TLS_VERSIONS[tls.max_version]
    if minimum > maximum:
        raise WebConfigError(
            f"{config}: tls_server_config.min_version {tls.min_version} is above"
            f" max_version {tls.max_version}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = minimum
        context.maximum_version = maximum
    except (ValueError, ssl.SSLError) as exc:
        raise WebConfigError(f"{config}: tls_server_config.min_version: {exc}") from None
    # Python's server contexts prefer the server's order by default: false must clear it.
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # HTTP/2 clients must fall back: the server speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_encrypted_key)
    except _EncryptedKeyError:
        raise WebConfigError(
            f"{config}: tls_server_config.key_file: {key} is encrypted; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        raise WebConfigError(
            f"{config}: tls_server_config.cert_file/key_file: cannot load {cert} with {key}:"
            f" {exc.reason or exc}"
        ) from None

    auth = tls.client_auth_type or "NoClientCert"
    has_ca = ca_file is not None or tls.client_ca is not None
    if has_ca and auth == "NoClientCert":
        raise WebConfigError(
            f"{config}: tls_server_config.client_auth_type: a client CA is configured but"
            " client_auth_type is NoClientCert; use RequireAndVerifyClientCert"
        )
    if auth in ("NoClientCert", "RequestClientCert"):
        # RequestClientCert asks for a certificate and never checks it: no protection at all,
        # and Python's ssl cannot ask without verifying, so it is served as NoClientCert.
        context.verify_mode = ssl.CERT_NONE
    else:
        if not has_ca:
            raise WebConfigError(
                f"{config}: tls_server_config.client_ca_file is required with"
                f" client_auth_type {auth} (client certificates are verified against it)"
            )
        try:
            if ca_file is not None:
                _readable(ca_file, config, "client_ca_file")
                context.load_verify_locations(cafile=ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except ssl.SSLError as exc:
            name = "client_ca_file" if ca_file is not None else "client_ca"
            raise WebConfigError(
                f"{config}: tls_server_config.{name}: no usable CA certificate"
                f" ({exc.reason or exc})"
            ) from None
        optional = auth == "VerifyClientCertIfGiven"
        context.verify_mode = ssl.CERT_OPTIONAL if optional else ssl.CERT_REQUIRED
    watched = [path for path in (cert, key, ca_file) if path is not None]
    return context, watched
