"""A stock SPIFFE client (py-spiffe) asking a Workload API socket.

usage: spiffe_probe.py SOCKET x509|jwt AUDIENCE|watch N|bare|handoff grpc|json

Prints one JSON object per answer; on a refusal prints {"error": ...} and
exits 1.
"""
import json
import sys
import threading

from spiffe import WorkloadApiClient


def x509(client):
    svid = client.fetch_x509_svid()
    svids = client.fetch_x509_svids()
    bundles = client.fetch_x509_bundles()
    td = svid.spiffe_id.trust_domain
    bundle = bundles.get_bundle_for_trust_domain(td)
    leaf = svid.leaf
    return {
        "spiffe_id": str(svid.spiffe_id),
        "all": [str(s.spiffe_id) for s in svids],
        "serial": format(leaf.serial_number, "x"),
        "not_after": int(leaf.not_valid_after_utc.timestamp()),
        "key_matches": svid.private_key.public_key().public_numbers()
        == leaf.public_key().public_numbers(),
        "bundle_authorities": len(bundle.x509_authorities) if bundle else 0,
    }


def jwt(client, audience):
    token = client.fetch_jwt_svid(audience={audience})
    checked = client.validate_jwt_svid(token.token, audience)
    bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_bundle_for_trust_domain(token.spiffe_id.trust_domain)
    return {
        "spiffe_id": str(token.spiffe_id),
        "audience": sorted(token.audience),
        "validated": str(checked.spiffe_id),
        "jwt_authorities": len(bundle.jwt_authorities) if bundle else 0,
    }


def watch(client, count):
    """Prints the SPIFFE IDs and serials of the first COUNT updates of one
    stream (rotations arrive on the same connection)."""
    done = threading.Event()
    seen = []

    def on_success(ctx):
        seen.append(
            {
                "ids": [str(s.spiffe_id) for s in ctx.x509_svids],
                "serials": [format(s.leaf.serial_number, "x") for s in ctx.x509_svids],
            }
        )
        print(json.dumps(seen[-1]), flush=True)
        if len(seen) >= count:
            done.set()

    def on_error(e):
        print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
        done.set()

    handler = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    done.wait(120)
    handler.cancel()
    return None


def bare(socket_path):
    """FetchX509SVID straight through grpcio, without the security header."""
    import grpc
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    with grpc.insecure_channel("unix://" + socket_path) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=30))
            return {"code": "OK"}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}


def handoff(socket_path, protocol):
    """Connects, hands the connection to a child and exits at once: the
    child asks over the inherited connection (gRPC through a private relay
    socket, or one JSON line) and prints what it got."""
    import os
    import socket
    import tempfile

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    if os.fork():
        os._exit(0)
    if protocol == "json":
        conn.sendall(b'{"op": "db.creds", "role": "app-ro"}\n')
        answer = conn.makefile().readline()
        return json.loads(answer) if answer else {"error": "closed"}
    relay_dir = tempfile.mkdtemp()
    relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    relay.bind(relay_dir + "/relay.sock")
    relay.listen(1)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass

    def serve():
        c, _ = relay.accept()
        threading.Thread(target=pump, args=(c, conn), daemon=True).start()
        pump(conn, c)

    threading.Thread(target=serve, daemon=True).start()
    client = WorkloadApiClient(socket_path="unix://" + relay_dir + "/relay.sock", default_timeout=30)
    try:
        return x509(client)
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)}


def main():
    socket, what = sys.argv[1], sys.argv[2]
    if what == "bare":
        print(json.dumps(bare(socket)))
        return
    if what == "handoff":
        print(json.dumps(handoff(socket, sys.argv[3])), flush=True)
        return
    client = WorkloadApiClient(socket_path="unix://" + socket, default_timeout=30)
    try:
        if what == "x509":
            print(json.dumps(x509(client)))
        elif what == "jwt":
            print(json.dumps(jwt(client, sys.argv[3])))
        elif what == "watch":
            watch(client, int(sys.argv[3]))
        else:
            raise SystemExit("unknown request " + what)
    except Exception as e:  # the refusal, as the client library reports it
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        sys.exit(1)
    finally:
        client.close()


main()
