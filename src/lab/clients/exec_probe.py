"""Asks a Workload API socket for X.509-SVIDs the way an impostor would,
over HTTP/2 written by hand (standard library only, so that any copy of the
interpreter runs it and a forked child can ask without a gRPC library).

usage:
  exec_probe.py SOCKET ask N
      N connections, one FetchX509SVID each, from this process.
  exec_probe.py SOCKET race N PROGRAM [ARG...]
      N tries of: connect, fork; the connecting process execs PROGRAM while
      its child asks over the inherited connection.
  exec_probe.py SOCKET exec-between PROGRAM
      Connects, asks once, then execs PROGRAM (another interpreter, running
      this script as `continue FD`), which asks again on the same connection.

Prints one JSON object: {"svids": K, "refused": R, "other": O} (and, for
exec-between, the first and second answers).
"""
import json
import os
import socket
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0, 1, 4, 6, 7
END_STREAM, END_HEADERS, ACK = 1, 4, 1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    # Literal header field without indexing, new name, no Huffman coding.
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request(stream):
    block = b"".join(
        literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("workload.spiffe.io", "true"),
        ]
    )
    # An empty X509SVIDRequest: uncompressed, length 0.
    return frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, b"\x00\x00\x00\x00\x00")


def read_exact(conn, n):
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def ask(conn, stream, first):
    """'svid' when a message with content comes back on `stream`, 'refused'
    when it ends without one, 'closed' when the connection ends."""
    if first:
        conn.sendall(PREFACE + frame(SETTINGS, 0, 0))
    conn.sendall(request(stream))
    try:
        while True:
            head = read_exact(conn, 9)
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            sid = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
            payload = read_exact(conn, length)
            if kind == SETTINGS and not flags & ACK:
                conn.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                conn.sendall(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                return "closed"
            elif sid == stream and kind == DATA and length > 5:
                return "svid"
            elif sid == stream and flags & END_STREAM:
                return "refused"
    except (EOFError, OSError):
        return "closed"


def connect(path):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect(path)
    return conn


def tally(answers):
    return {
        "svids": answers.count("svid"),
        "refused": answers.count("refused"),
        "other": len(answers) - answers.count("svid") - answers.count("refused"),
    }


def race_once(path, program):
    r, w = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(r)
        conn = connect(path)
        if os.fork() == 0:
            # The child keeps the connection and asks at once.
            answer = ask(conn, 1, True)
            os.write(w, answer.encode())
            os._exit(0)
        # The process that connected becomes PROGRAM.
        os.close(w)
        os.execv(program[0], program)
    os.close(w)
    answer = b""
    while True:
        chunk = os.read(r, 64)
        if not chunk:
            break
        answer += chunk
    os.close(r)
    return first, answer.decode() or "closed"


def main():
    path, what = sys.argv[1], sys.argv[2]
    if what == "ask":
        answers = []
        for _ in range(int(sys.argv[3])):
            with connect(path) as conn:
                answers.append(ask(conn, 1, True))
        print(json.dumps(tally(answers)))
    elif what == "race":
        n, program = int(sys.argv[3]), sys.argv[4:]
        tries = [race_once(path, program) for _ in range(n)]
        for pid, _ in tries:
            os.waitpid(pid, 0)
        print(json.dumps(tally([answer for _, answer in tries])))
    elif what == "exec-between":
        conn = connect(path)
        first = ask(conn, 1, True)
        fd = conn.detach()
        os.set_inheritable(fd, True)
        sys.stdout.write(json.dumps({"first": first}) + "\n")
        sys.stdout.flush()
        os.execv(sys.argv[3], [sys.argv[3], __file__, path, "continue", str(fd)])
    elif what == "continue":
        conn = socket.socket(fileno=int(sys.argv[3]))
        conn.settimeout(30)
        print(json.dumps({"second": ask(conn, 3, False)}))
    else:
        raise SystemExit("unknown request " + what)


main()
