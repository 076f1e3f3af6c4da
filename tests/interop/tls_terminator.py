#!/usr/bin/env python3
"""A TLS-terminating front for the SMSC simulator: Python's ssl (OpenSSL) on the server side,
plain TCP to the simulator behind it, so that consentgate's upstream TLS leg is tested
against an implementation independent of rustls.

Usage: tls_terminator.py CERT KEY UPSTREAM_HOST UPSTREAM_PORT

Listens on 127.0.0.1 (an ephemeral port, printed as one line "PORT <n>" on stdout once
listening), completes the TLS handshake of each connection, connects to the upstream and
copies bytes both ways until either side closes. Logs "HANDSHAKE ok <version>" or
"HANDSHAKE failed <reason>" per connection on stderr (a TCP connect without TLS, such as the
gateway's reachability probe, shows as a failed handshake). Runs until killed; started and stopped by
tests/tls.rs.
"""

import socket
import ssl
import sys
import threading


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def log(line):
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def serve(conn, ctx, upstream):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as e:
        log(f"HANDSHAKE failed {e}")
        conn.close()
        return
    log(f"HANDSHAKE ok {tls.version()}")
    try:
        up = socket.create_connection(upstream, timeout=5)
    except OSError:
        tls.close()
        return
    up.settimeout(None)
    threading.Thread(target=pipe, args=(up, tls), daemon=True).start()
    pipe(tls, up)


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    cert, key, host, port = argv[1], argv[2], argv[3], int(argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    print(f"PORT {lsock.getsockname()[1]}", flush=True)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn, ctx, (host, port)), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
