#!/usr/bin/env python3
"""Interoperability client: drives consentgate with smpplib, an independent SMPP implementation.

Usage: smpplib_client.py HOST PORT SYSTEM_ID PASSWORD [wait-mo] [tls:CA_FILE:SERVER_NAME]

Binds as transceiver, submits a GSM7 text and a two-part concatenated UCS-2 text (UDH
05 00 03 ref 02 seq, built by smpplib.gsm.make_parts) with registered_delivery, collects
every submit_sm_resp and deliver_sm (receipts and MO), unbinds, disconnects and prints ONE
JSON line on stdout:

  {"bound": true, "submit_resp": [{"status": 0, "message_id": "..."}, ...],
   "receipts": ["<receipted message id>", ...], "mo": ["<decoded text>", ...],
   "unbind_ok": true}

With `wait-mo` it also waits for one MO deliver_sm. With `tls:CA_FILE:SERVER_NAME` it
connects over TLS (Python's ssl, i.e. OpenSSL), verifying the gateway's certificate against
CA_FILE and SERVER_NAME, and adds "tls": {"version", "cipher", "peer_cn"} to the JSON. Every
wait is bounded (10 s). Any exception: traceback on stderr, non-zero exit. Run by
tests/interop.rs and tests/tls.rs (see scripts/test).
"""

import json
import logging
import select
import ssl
import sys
import time
import traceback

import smpplib.client
import smpplib.consts
import smpplib.gsm
import smpplib.smpp

GSM_TEXT = "Hello from smpplib via consentgate"
# 80 UCS-2 characters = 160 octets: two concatenated parts.
UCS2_TEXT = ("您好，这是一条通过网关发送的中文测试短信。" * 4)[:80]
SOURCE = "1069012345"
DESTINATION = "8613800138000"
WAIT_S = 10.0


def decode_text(data_coding, data, esm_class):
    """Decodes a short_message (UDH stripped when UDHI is set)."""
    data = data or b""
    if esm_class & 0x40 and data:
        data = data[1 + data[0]:]
    if data_coding == smpplib.consts.SMPP_ENCODING_ISO10646:
        return data.decode("utf-16-be")
    if data_coding == smpplib.consts.SMPP_ENCODING_DEFAULT:
        # Unpacked GSM 03.38 default alphabet, one septet per octet (ESC 0x1B for the extension table).
        table = smpplib.gsm.GSM_CHARACTER_TABLE
        out, esc = [], False
        for b in data:
            if b == 0x1B and not esc:
                esc = True
                continue
            out.append(table[b + 0x80] if esc and b + 0x80 < len(table) else table[b] if b < 0x80 else "?")
            esc = False
        return "".join(out)
    return data.decode("latin-1")


def as_str(v):
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("ascii", "replace").rstrip("\0")
    return str(v)


class VerifyingContext:
    """What smpplib calls as ssl_context.wrap_socket(sock): a verifying client context that
    also checks the server name (smpplib passes none)."""

    def __init__(self, ca_file, server_name):
        self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        self.server_name = server_name

    def wrap_socket(self, sock):
        return self.ctx.wrap_socket(sock, server_hostname=self.server_name)


def readable(sock, timeout):
    """select() that also sees bytes ssl already decrypted and buffered."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def main(argv):
    opts = argv[5:]
    if len(argv) < 5 or any(o != "wait-mo" and not o.startswith("tls:") for o in opts):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, system_id, password = argv[1], int(argv[2]), argv[3], argv[4]
    wait_mo = "wait-mo" in opts
    tls = next((o[4:].rsplit(":", 1) for o in opts if o.startswith("tls:")), None)

    result = {"bound": False, "submit_resp": [], "receipts": [], "mo": [], "unbind_ok": False}
    receipt_texts = []
    errors = []

    context = VerifyingContext(tls[0], tls[1]) if tls else None
    client = smpplib.client.Client(host, port, timeout=5, allow_unknown_opt_params=True, ssl_context=context)

    def on_sent(pdu, **_):
        result["submit_resp"].append({"status": int(pdu.status), "message_id": as_str(pdu.message_id)})

    def on_received(pdu, **_):
        esm = pdu.esm_class or 0
        if esm & 0x3C:  # delivery receipt / acknowledgement (v3.4 §5.2.12)
            mid = as_str(getattr(pdu, "receipted_message_id", None))
            text = as_str(pdu.short_message)
            if not mid and text.startswith("id:"):
                mid = text[3:].split(" ", 1)[0]
            result["receipts"].append(mid)
            receipt_texts.append(text)
        else:
            result["mo"].append(decode_text(pdu.data_coding or 0, pdu.short_message, esm))
        return smpplib.consts.SMPP_ESME_ROK

    def on_error(pdu):
        # Error responses (e.g. a rejected submit_sm_resp) are recorded, not raised:
        # read_once goes on to call the normal handler for the PDU.
        errors.append({"command": pdu.command, "status": int(pdu.status)})

    client.set_message_sent_handler(on_sent)
    client.set_message_received_handler(on_received)
    client.set_error_pdu_handler(on_error)

    def pump_until(done, deadline):
        """Reads and handles PDUs until done() or the deadline."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if readable(client._socket, min(left, 0.5)):
                client.read_once(auto_send_enquire_link=False)
        return True

    try:
        client.connect()
        if isinstance(client._socket, ssl.SSLSocket):
            peer = dict(x[0] for x in client._socket.getpeercert()["subject"])
            result["tls"] = {
                "version": client._socket.version(),
                "cipher": client._socket.cipher()[0],
                "peer_cn": peer.get("commonName"),
            }
        client.bind_transceiver(system_id=system_id, password=password)
        result["bound"] = True

        submitted = 0
        for text in (GSM_TEXT, UCS2_TEXT):
            parts, encoding_flag, msg_type_flag = smpplib.gsm.make_parts(text)
            for part in parts:
                client.send_message(
                    source_addr_ton=smpplib.consts.SMPP_TON_INTL,
                    source_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                    source_addr=SOURCE,
                    dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                    dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                    destination_addr=DESTINATION,
                    short_message=part,
                    data_coding=encoding_flag,
                    esm_class=msg_type_flag,
                    registered_delivery=True,
                )
                submitted += 1

        deadline = time.monotonic() + WAIT_S
        # Every submit answered, and one receipt per accepted part (a refused part gets none).
        accepted = lambda: sum(1 for r in result["submit_resp"] if r["status"] == 0)
        pump_until(
            lambda: len(result["submit_resp"]) >= submitted and len(result["receipts"]) >= accepted(), deadline
        )
        if wait_mo:
            pump_until(lambda: len(result["mo"]) >= 1, time.monotonic() + WAIT_S)

        # Unbind by hand: deliver_sm may still arrive before unbind_resp (smpplib's unbind()
        # would take the first PDU read as the answer).
        unbind = smpplib.smpp.make_pdu("unbind", client=client)
        client.send_pdu(unbind)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if not readable(client._socket, 0.5):
                continue
            pdu = client.read_pdu()
            if pdu.command == "unbind_resp":
                result["unbind_ok"] = pdu.sequence == unbind.sequence and int(pdu.status) == 0
                break
            if pdu.command == "deliver_sm":
                client._message_received(pdu)
            elif pdu.command == "submit_sm_resp":
                on_sent(pdu)
            elif pdu.command == "enquire_link":
                client._enquire_link_received(pdu)
    finally:
        client.disconnect()

    if errors:
        result["errors"] = errors
    result["receipt_texts"] = receipt_texts
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        sys.exit(main(sys.argv))
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
