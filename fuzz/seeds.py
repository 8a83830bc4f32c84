#!/usr/bin/env python3
"""Seeds for the fuzz targets, from the repository's test fixtures.

Usage: seeds.py OUT_DIR

Writes OUT_DIR/<target>/ for every target: the fixtures a target reads
as they are (pcaps, config dumps, rulesets), the inputs a target frames its
own way derived from them (the DNS messages inside the pcaps, the pcaps'
packets in capture_packets' framing, the test certificates as DER), and
the hand-written seeds in fuzz/seeds/<target>/ and the inputs that once
crashed a target, fuzz/regressions/<target>/ (each also a unit test).
"""

import base64
import pathlib
import shutil
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
HAND = ROOT / "fuzz" / "seeds"
# Bigger inputs slow every execution that picks them and are cut at
# libFuzzer's -max_len anyway.
MAX_SEED = 256 * 1024
# capture_packets' selector byte picks from this list (its LINKTYPES).
LINKTYPES = [1, 101, 113, 276, 0, 108, 228, 229, 239]
DNS_PORTS = {53, 5353, 5355, 8053}


def pcap_records(data):
    """(linktype, [(ts_us, bytes, orig_len)]) of a classic pcap, else None."""
    if len(data) < 24:
        return None
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return None
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
    at, records = 24, []
    while at + 16 <= len(data):
        secs, frac, caplen, orig = struct.unpack(e + "IIII", data[at : at + 16])
        at += 16
        packet = data[at : at + caplen]
        at += caplen
        records.append((secs * 1_000_000 + (frac // 1000 if nanos else frac), packet, orig))
    return linktype, records


def ip_of(linktype, packet):
    """The IP packet inside a link-layer frame, or None."""
    if linktype == 1:
        ethertype, at = struct.unpack(">H", packet[12:14])[0] if len(packet) >= 14 else 0, 14
        while ethertype in (0x8100, 0x88A8) and len(packet) >= at + 4:
            ethertype, at = struct.unpack(">H", packet[at + 2 : at + 4])[0], at + 4
        return packet[at:] if ethertype in (0x0800, 0x86DD) else None
    if linktype == 113:
        return packet[16:]
    if linktype == 276:
        return packet[20:]
    if linktype in (0, 108):
        return packet[4:]
    if linktype in (101, 228, 229):
        return packet
    return None


def dns_messages(linktype, packet):
    """DNS messages in a UDP datagram or a TCP segment to or from a DNS port."""
    ip = ip_of(linktype, packet)
    if not ip:
        return []
    version = ip[0] >> 4
    if version == 4:
        proto, transport = ip[9], ip[(ip[0] & 0x0F) * 4 :]
    elif version == 6 and len(ip) >= 40:
        proto, transport = ip[6], ip[40:]
    else:
        return []
    if len(transport) < 8:
        return []
    sport, dport = struct.unpack(">HH", transport[:4])
    if not DNS_PORTS & {sport, dport}:
        return []
    if proto == 17:
        return [transport[8:]]
    if proto == 6 and len(transport) >= 20:
        payload = transport[(transport[12] >> 4) * 4 :]
        return [payload[2:]] if len(payload) > 2 else []
    return []


def framed(linktype, records):
    """capture_packets' input: selector, then (length, ms step, bytes) each."""
    out, last = bytearray([LINKTYPES.index(linktype)]), None
    for ts_us, packet, _ in records:
        step = 0 if last is None else max(0, min(0xFFFF, (ts_us - last) // 1000))
        last = ts_us
        packet = packet[:0xFFFF]
        out += struct.pack(">HH", len(packet), step) + packet
    return bytes(out)


def copy(target, out, paths):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.is_file() and path.stat().st_size <= MAX_SEED:
            shutil.copy(path, d / path.name)


def main():
    out = pathlib.Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    pcaps = sorted((FIXTURES / "pcap").glob("*.pcap*"))
    envoy = sorted((FIXTURES / "envoy").iterdir())
    node = sorted((FIXTURES / "node").iterdir())
    copy("capture_file", out, pcaps)
    copy("envoy_config_dump", out, [p for p in envoy if p.suffix == ".json"])
    copy("envoy_stats", out, [p for p in envoy if p.suffix == ".txt"])
    copy("iptables", out, [p for p in node if p.suffix in (".save", ".restore")])
    copy("nft", out, [p for p in node if p.suffix in (".json", ".nft")])
    copy("ipvs", out, [p for p in node if p.suffix == ".ipvsadm" or "ip_vs" in p.name])
    # Hand-written seeds, and the inputs that once crashed a target.
    for d in [*HAND.iterdir(), *(ROOT / "fuzz" / "regressions").iterdir()]:
        copy(d.name, out, sorted(d.iterdir()))

    for target in ("dns_message", "capture_packets", "grpc_wire"):
        (out / target).mkdir(parents=True, exist_ok=True)
    seen = set()
    for pcap in pcaps:
        parsed = pcap_records(pcap.read_bytes())
        if not parsed or parsed[0] not in LINKTYPES:
            continue
        linktype, records = parsed
        seed = framed(linktype, records[:200])
        if len(seed) <= MAX_SEED:
            (out / "capture_packets" / pcap.stem).write_bytes(seed)
        for _, packet, _ in records:
            for message in dns_messages(linktype, packet):
                if message and message not in seen:
                    seen.add(message)
                    (out / "dns_message" / f"{pcap.stem}-{len(seen)}").write_bytes(message)
    for pem in sorted((FIXTURES / "tls").glob("*.pem")):
        text = pem.read_text()
        body = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
        (out / "grpc_wire" / (pem.stem + ".der")).write_bytes(base64.b64decode(body))
    for d in sorted(out.iterdir()):
        print(f"{d.name}: {sum(1 for _ in d.iterdir())} seeds")


if __name__ == "__main__":
    main()
