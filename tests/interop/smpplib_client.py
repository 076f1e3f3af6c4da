#!/usr/bin/env python3
"""Interop client: the independent SMPP implementation `smpplib` (PyPI) talks to consentgate.

Usage: smpplib_client.py HOST PORT SYSTEM_ID PASSWORD [wait-mo]

Binds as transceiver, sends a GSM7 text and a UCS-2 Chinese text that needs two
concatenated parts (UDH), all with registered_delivery, waits (bounded) for every
submit_sm_resp and one receipt per part, optionally for one MO, unbinds and prints one JSON
line with what it saw. Any exception: traceback on stderr, exit 1.
"""
import json
import socket
import sys
import time
import traceback

import smpplib.client
import smpplib.consts
import smpplib.gsm

GSM_TEXT = "Hello from smpplib via consentgate"
CHINESE_TEXT = "您好，这是一条通过网关发送的中文测试短信。" * 4  # 84 chars: 2 UCS-2 parts


def as_text(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("ascii", "replace")
    return str(v)


def main():
    host, port, system_id, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    wait_mo = len(sys.argv) > 5 and sys.argv[5] == "wait-mo"
    out = {"bound": False, "submit_resp": [], "receipts": [], "mo": [], "unbind_ok": False}

    client = smpplib.client.Client(host, port, timeout=1, allow_unknown_opt_params=True)

    def on_sent(pdu, **_):
        out["submit_resp"].append({"status": pdu.status, "message_id": as_text(pdu.message_id)})

    def on_received(pdu, **_):
        if pdu.esm_class & 0x3C:
            rid = as_text(getattr(pdu, "receipted_message_id", None))
            if not rid:
                text = as_text(pdu.short_message) or ""
                rid = text.split("id:", 1)[1].split(" ", 1)[0] if "id:" in text else ""
            out["receipts"].append(rid)
        else:
            sm = pdu.short_message or b""
            if pdu.data_coding == smpplib.consts.SMPP_ENCODING_ISO10646:
                out["mo"].append(sm.decode("utf-16-be"))
            else:
                out["mo"].append(sm.decode("latin-1"))
        return 0

    client.set_message_sent_handler(on_sent)
    client.set_message_received_handler(on_received)
    client.connect()
    client.bind_transceiver(system_id=system_id, password=password)
    out["bound"] = True

    parts = []
    for text in (GSM_TEXT, CHINESE_TEXT):
        pp, coding, esm = smpplib.gsm.make_parts(text)
        parts += [(p, coding, esm) for p in pp]
    for part, coding, esm in parts:
        client.send_message(
            source_addr_ton=0,
            source_addr_npi=1,
            source_addr="1069012345",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr="8613800138000",
            short_message=part,
            data_coding=coding,
            esm_class=esm,
            registered_delivery=True,
        )

    deadline = time.time() + 10
    while time.time() < deadline:
        done = len(out["submit_resp"]) >= len(parts) and len(out["receipts"]) >= len(parts)
        if done and (not wait_mo or out["mo"]):
            break
        try:
            client.read_once(auto_send_enquire_link=False)
        except socket.timeout:
            continue

    client.unbind()
    out["unbind_ok"] = True
    client.disconnect()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
