#!/usr/bin/env python3
"""India DLT interop: smpplib (PyPI 2.2.3), an SMPP implementation independent of this crate,
sends submit_sm with the DLT TLVs through consentgate.

Usage: smpplib_dlt.py HOST PORT SYSTEM_ID PASSWORD CASES_JSON

CASES_JSON is a list of {"header", "destination", "text", "tlvs": {"0x1400": "...", ...}}.
smpplib knows only the standard optional parameters; the DLT tags are registered as
C-Octet-String TLVs (smpplib appends the NUL, which consentgate accepts) the way smpplib's own
table declares its parameters, so smpplib itself encodes them. Binds as transmitter, sends
each case as GSM 7-bit (alphanumeric header: TON 5 / NPI 0; destination TON 1 / NPI 1),
waits for every submit_sm_resp, unbinds and prints ONE JSON line: {"statuses": [...]} in case
order. Every wait is bounded (10 s). Run by tests/dlt_gateway.rs.
"""

import json
import sys
import time

import smpplib.client
import smpplib.command
import smpplib.consts
import smpplib.smpp

WAIT_S = 10.0
NAMES = {0x1400: "dlt_pe_id", 0x1401: "dlt_template_id", 0x1402: "dlt_chain"}


def register_dlt_tlvs():
    """Declares the DLT tags to smpplib: its TLV code table and submit_sm's parameters."""
    for code, name in NAMES.items():
        smpplib.consts.OPTIONAL_PARAMS[name] = code
        smpplib.command.SubmitSM.params[name] = smpplib.command.Param(type=str, max=65)
        setattr(smpplib.command.SubmitSM, name, None)  # absent unless a case gives it
    extra = tuple(n for n in NAMES.values() if n not in smpplib.command.SubmitSM.params_order)
    smpplib.command.SubmitSM.params_order = smpplib.command.SubmitSM.params_order + extra


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, system_id, password = argv[1], int(argv[2]), argv[3], argv[4]
    cases = json.loads(argv[5])
    register_dlt_tlvs()
    statuses = {}
    client = smpplib.client.Client(host, port, timeout=5, allow_unknown_opt_params=True)

    def on_sent(pdu, **_):
        statuses[pdu.sequence] = int(pdu.status)

    client.set_message_sent_handler(on_sent)
    client.set_error_pdu_handler(lambda pdu: None)
    client.connect()
    client.bind_transmitter(system_id=system_id, password=password)
    seqs = []
    for c in cases:
        kwargs = {NAMES[int(tag, 16)]: value for tag, value in c.get("tlvs", {}).items()}
        pdu = client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
            source_addr=c["header"],
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
            destination_addr=c["destination"],
            data_coding=smpplib.consts.SMPP_ENCODING_DEFAULT,
            short_message=c["text"].encode("ascii"),
            **kwargs,
        )
        seqs.append(pdu.sequence)
    deadline = time.monotonic() + WAIT_S
    while len(statuses) < len(seqs) and time.monotonic() < deadline:
        client.read_once(auto_send_enquire_link=False)
    client.unbind()
    client.disconnect()
    print(json.dumps({"statuses": [statuses.get(s) for s in seqs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
