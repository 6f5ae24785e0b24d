"""Two programs that trust each other by SPIFFE ID: each takes its X.509-SVID
from the Workload API (py-spiffe), keeps the key in memory (a memfd, never a
file on disk), and checks the other side's certificate against the trust
bundle and the SPIFFE ID it expects.

usage: spiffe_mtls.py SOCKET serve EXPECTED_PEER_ID
       spiffe_mtls.py SOCKET connect PORT EXPECTED_PEER_ID

`serve` prints "listening PORT", accepts one connection, answers it; both
sides print one JSON line.
"""
import json
import os
import socket
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient


def in_memory(data):
    fd = os.memfd_create("svid", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd, "/proc/self/fd/%d" % fd


def context(client, side):
    svid = client.fetch_x509_svid()
    bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain)
    key = svid.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    fd, path = in_memory(chain + key)
    ctx.load_cert_chain(path)
    os.close(fd)
    cadata = "".join(
        a.public_bytes(serialization.Encoding.PEM).decode() for a in bundle.x509_authorities
    )
    ctx.load_verify_locations(cadata=cadata)
    return str(svid.spiffe_id), ctx


def peer_id(tls):
    cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def main():
    socket_path, role = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient(socket_path="unix://" + socket_path, default_timeout=30)
    if role == "serve":
        expected = sys.argv[3]
        me, ctx = context(client, ssl.PROTOCOL_TLS_SERVER)
        listener = socket.create_server(("127.0.0.1", 0))
        print("listening %d" % listener.getsockname()[1], flush=True)
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            peer = peer_id(tls)
            ok = peer == expected
            tls.sendall(("%s\n" % (me if ok else "refused")).encode())
            print(json.dumps({"me": me, "peer": peer, "accepted": ok}))
    else:
        port, expected = int(sys.argv[3]), sys.argv[4]
        me, ctx = context(client, ssl.PROTOCOL_TLS_CLIENT)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw) as tls:
                peer = peer_id(tls)
                said = tls.makefile().readline().strip()
                print(json.dumps({"me": me, "peer": peer, "accepted": peer == expected, "heard": said}))
    client.close()


main()
