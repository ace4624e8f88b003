"""DKIM signatures (RFC 6376) on outgoing email, per sender profile.

Gmail and Yahoo require DKIM from bulk senders, aligned with the From domain, and RFC 8058
section 4 asks that both List-Unsubscribe headers be covered by the signature, so a one-click
URL cannot be swapped in transit. Each sender profile names its signing domain, selector and key
(an environment variable LEADFLOW_DKIM_*, or the key stored encrypted: core/secrets.py).

dkimpy does the parts that are easy to get subtly wrong (parsing, relaxed canonicalization,
header selection and hashing, the signature header's folding); its tests and ours check the
result with its own verifier (campaigns/tests/test_dkim.py). The RSA operation itself is done by
OpenSSL (cryptography): dkimpy's pure-Python RSA takes ~9 ms per 2048-bit signature on this
machine, four times what sending a whole email costs, OpenSSL ~0.4 ms. Canonicalization is
relaxed for headers (relays re-fold them) and simple for the body (dkimpy's default): ours is
quoted-printable, CRLF, short lines, which relays pass unchanged, and relaxed body
canonicalization cost as much as the rest of the signing. That is why `sign` is
dkimpy's `DKIM.sign`/`gen_header` with the key operation swapped, and why dkimpy is pinned.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from core.secrets import SecretUnavailable, decrypt, env_name_problem, env_secret

KEY_ENV_PREFIX = "LEADFLOW_DKIM_"
MIN_KEY_BITS = 1024  # RFC 8301 section 3.2: verifiers must refuse smaller RSA keys; use 2048
# Signed when present, in this order. Reply-To too: a rewritten Reply-To diverts the answers.
SIGNED = (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
          b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post")
# Listed once more than they occur ("over-signing", RFC 6376 section 8.15): a relay or attacker
# cannot add a second From or List-Unsubscribe without breaking the signature. Transactional mail
# has no List-Unsubscribe, and one added later breaks the signature too.
OVERSIGNED = (b"from", b"subject", b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post")
_POLICY = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
_HEADER = b"DKIM-Signature"


class DkimUnavailable(Exception):
    """The sender is configured to sign but its key cannot be read or used (the reason says why)."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key: rsa.RSAPrivateKey

    def public_record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def key_env_problem(name: str) -> str | None:
    return env_name_problem(name, prefix=KEY_ENV_PREFIX, what="a DKIM key")


def load_key(pem: str, *, where: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text; DkimUnavailable naming `where` if it is not one."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode("ascii", errors="replace"), password=None)
    except (ValueError, TypeError) as exc:
        raise DkimUnavailable(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimUnavailable(f"{where}: the key must be RSA (receivers widely verify only rsa-sha256)")
    if key.key_size < MIN_KEY_BITS:
        raise DkimUnavailable(f"{where}: the key has {key.key_size} bits; at least {MIN_KEY_BITS} (2048 advised)")
    return key


def sender_key(*, domain: str, selector: str, key_env: str, key_encrypted: str) -> DkimKey | None:
    """The sender's signing key, or None when it does not sign (no domain). Raises DkimUnavailable."""
    if not domain:
        return None
    try:
        if key_env:
            pem, where = env_secret(key_env, problem=key_env_problem(key_env)), f"environment variable {key_env}"
        else:
            pem, where = decrypt(key_encrypted), "the stored DKIM key"
    except SecretUnavailable as exc:
        raise DkimUnavailable(f"DKIM key for {domain}: {exc}") from None
    if not pem:
        raise DkimUnavailable(f"DKIM signing for {domain} is on but no key is set (key env or stored key)")
    return DkimKey(domain=domain, selector=selector, key=load_key(pem, where=where))


def sign(message: bytes, key: DkimKey, *, now: float | None = None) -> bytes:
    """The message with a DKIM-Signature header prepended (rsa-sha256, relaxed/simple)."""
    # The header block parsed by dkimpy; the body is hashed as is (simple canonicalization only
    # strips trailing empty lines): parsing it line by line was a quarter of the cost.
    head, separator, body = message.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("not a message: no blank line after the headers")
    headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
    present = {name.lower() for name, _ in headers}
    include = tuple(name for name in SIGNED if name in present)
    include += tuple(name for name in OVERSIGNED if name in include or name.startswith(b"list-"))
    headers = [(name, value) for name, value in headers if name.lower() in present.intersection(include)]
    body_hash = base64.b64encode(hashlib.sha256(_POLICY.canonicalize_body(body)).digest())
    fields = [
        (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", _POLICY.to_c_value()), (b"d", key.domain.encode("ascii")),
        (b"s", key.selector.encode("ascii")), (b"t", str(int(now if now is not None else time.time())).encode()),
        (b"h", b" : ".join(include)), (b"bh", body_hash),  # spaces: fold() may break the line only there
        (b"b", b"0" * 60),  # as dkimpy: b= starts on its own line, so folding it later moves nothing else
    ]
    # From here as dkimpy's DomainSigner.gen_header, with OpenSSL for the RSA step.
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_HEADER), linesep=b"\r\n")
    value = dkim.RE_BTAG.sub(b"\\1", value)
    hasher = hashlib.sha256()
    dkim.hash_headers(hasher, _POLICY, _POLICY.canonicalize_headers(headers), include, (_HEADER, b" " + value),
                      dict(fields))
    signature = key.key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    fields[-1] = (b"b", base64.b64encode(signature))
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n", namelen=len(_HEADER), linesep=b"\r\n")
    return _HEADER + b": " + value + message
