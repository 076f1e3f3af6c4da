#!/usr/bin/env python3
"""Interoperability client: drives the CMPP ISMG simulator with pycmpp (PyPI 2.0.2), an
independent CMPP 2.x client.

Usage: pycmpp_client.py HOST PORT SP_ID SECRET

CONNECTs (Version 0x21), checks the AuthenticatorISMG (1-byte Status, as CMPP 2.0 has it),
submits with Registered_Delivery 1 a short UCS-2 text and a 100-character one that pycmpp
splits into two parts (UDH 05 00 03 ref 02 seq, TP_udhi 1), reads every SUBMIT_RESP and
status report (acknowledging each report with DELIVER_RESP), sends ACTIVE_TEST, TERMINATEs
and prints ONE JSON line on stdout:

  {"connect_status": 0, "version": 33, "auth_ok": true,
   "submit_resp": [{"sequence": 3, "msg_id": 123, "result": 0}, ...],
   "reports": [{"msg_id": 123, "stat": "DELIVRD", "dest": "8613800138000"}, ...],
   "active_test_ok": true, "terminate_ok": true}

Every wait is bounded (10 s). Any exception: traceback on stderr, non-zero exit. Run by
tests/cmpp_sim.rs (see scripts/test).

pycmpp 2.0.2 quirks, and how this script works around them:
- `Cmpp.run()` / `receive()` loop forever (a closed socket spins: `recv` returns b"" and the
  loop continues), the heartbeat thread is not a daemon and never ends, and `recv(12)` /
  `recv(length - 12)` assume whole frames. So this script uses pycmpp for what it builds and
  parses (CONNECT, SUBMIT incl. the long-message split, ACTIVE_TEST, TERMINATE; CONNECT_RESP
  and SUBMIT_RESP) and reads the socket itself, with `client_heartbeat=False`.
- It has no DELIVER handler or builder: status reports and MOs are never acknowledged. This
  script parses the 2.0 report (60 bytes) and writes DELIVER_RESP (Msg_Id + 1-byte Result).
- Its ACTIVE_TEST_RESP is malformed: Total_Length 13 but the body is the 4 ASCII bytes "0x00"
  (`reverse = b'0x00'`), 16 bytes on the wire; a peer's framing is off by 3 bytes after it.
  Hence the simulator's own ACTIVE_TEST stays off for pycmpp.
- `Cmpp.submit()` never passes `src_id` to the SUBMIT: Src_Id is sent empty (all NUL), so a
  report's Dest_Id is empty too. Msg_src is written unpadded: SP_ID must be 6 characters.
- The `auth()` method keeps no AuthenticatorSource; this script builds the CONNECT with
  pycmpp's `ConnectRequestInstance` itself to check AuthenticatorISMG.
"""

import hashlib
import json
import socket
import struct
import sys
import time
import traceback

from pycmpp import Cmpp
from pycmpp.request import ActiveTestRequestInstance, ConnectRequestInstance
from pycmpp.response import ConnectResponseInstance, SubmitResponseInstance

SHORT_TEXT = "短信测试"
# 100 characters: pycmpp splits at 64, so two parts.
LONG_TEXT = ("您好，这是一条通过网关发送的中文测试短信。" * 5)[:100]
DESTINATION = "8613800138000"
WAIT_S = 10.0


def read_frame(sock, deadline):
    """One whole frame (header included), or None at EOF."""
    buf = b""
    need = 4
    while len(buf) < need:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(need - len(buf))
        if not chunk:
            return None
        buf += chunk
        if len(buf) == 4:
            need = struct.unpack("!L", buf)[0]
    return buf


def main():
    host, port, sp_id, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    client = Cmpp(host, port, sp_id, secret, src_id="1069012345", delivery=1, client_heartbeat=False)
    client.connect()
    sock = client.so
    deadline = time.monotonic() + WAIT_S

    req = ConnectRequestInstance()
    client.send(req.create(sp_id, secret))
    frame = read_frame(sock, deadline)
    res = ConnectResponseInstance()
    res.resolve(frame)
    out = {"connect_status": res.status, "version": res.version, "auth_ok": None}
    if res.status != 0:
        client.close()
        print(json.dumps(out))
        return
    expected = hashlib.md5(bytes([res.status]) + req.auth_source + secret.encode("utf-8")).digest()
    out["auth_ok"] = expected == res.authenticator_ISMG

    client.submit(SHORT_TEXT, [DESTINATION])
    client.submit(LONG_TEXT, [DESTINATION])
    resps, reports = [], []
    while len(resps) < 3 or len(reports) < 3:
        frame = read_frame(sock, deadline)
        if frame is None:
            raise RuntimeError("EOF while waiting for SUBMIT_RESPs and reports")
        _, command_id, seq = struct.unpack("!LLL", frame[:12])
        if command_id == 0x80000004:
            r = SubmitResponseInstance()
            r.resolve(frame)
            resps.append({"sequence": r.seq_id, "msg_id": r.msg_id, "result": r.status})
        elif command_id == 0x00000005:
            body = frame[12:]
            msg_id = body[0:8]
            registered_delivery, msg_length = body[63], body[64]
            content = body[65:65 + msg_length]
            if registered_delivery == 1:
                rid, = struct.unpack("!Q", content[0:8])
                stat = content[8:15].decode("ascii")
                dest = content[35:56].rstrip(b"\0").decode("ascii")
                reports.append({"msg_id": rid, "stat": stat, "dest": dest})
            # DELIVER_RESP, 2.0: Msg_Id 8 + Result 1.
            sock.sendall(struct.pack("!LLL", 21, 0x80000005, seq) + msg_id + b"\0")
    out["submit_resp"] = resps
    out["reports"] = reports

    at = ActiveTestRequestInstance()
    client.send(at.create())
    frame = read_frame(sock, deadline)
    out["active_test_ok"] = frame is not None and struct.unpack("!LLL", frame[:12])[1:] == (0x80000008, at.seq_id)

    client.terminate()
    frame = read_frame(sock, deadline)
    out["terminate_ok"] = frame is not None and struct.unpack("!L", frame[4:8])[0] == 0x80000002
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
