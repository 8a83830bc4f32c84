"""podprobe's benchmarks against tcpdump and dig, run by bench/run in a lab.

Every figure is measured for podprobe and its baseline in the same run, on
the same traffic, interleaved (podprobe, baseline, baseline, podprobe, ...),
and reported as the median of the repeats with the podprobe/baseline ratio,
so that the ratio holds on a busy machine. Standard library only.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

BACKEND_IP = "10.244.0.11"  # backend-1
DNS_SERVICE = "10.96.0.10"
GRPC_SERVICE = "10.96.0.30:50051"
HEADLESS = "backends.default.svc.cluster.local"
FLOOD_PORT = 9999
FLOOD_FILTER = f"udp dst port {FLOOD_PORT}"
PACKET_SIZE = 100  # UDP payload bytes
SETTLE_S = 0.5  # a capture's time to open its ring before traffic starts
DRAIN_S = 1.5  # after the traffic, before the capture is interrupted


CAVEATS = [
    "- Capture CPU is the capturing process's own user+sys time (`wait4`). The kernel's copy "
    "of each packet into the AF_PACKET ring happens in softirq context on the sending CPU and "
    "is charged to the sender (or ksoftirqd), not to the capture, the same for both tools; what differs is the work of draining the ring and "
    "writing the records.",
    "- tcpdump's pipe baseline is `tcpdump -w -` without `-U` (block-buffered, its cheapest "
    "mode); podprobe streams `-w -` live (handed over at least every 10 ms).",
    "- Peak RSS includes the mapped kernel ring: podprobe asks for 32 MiB, tcpdump keeps "
    "libpcap's 2 MiB default.",
    "- tcpdump's block ring hands a block over when it is full or 1 s old, and an interrupted "
    "tcpdump drops the block it has not been given, so every capture gets "
    f"{DRAIN_S} s after the traffic before SIGINT.",
    "- Lost = packets the generator sent minus records written; the capture's own "
    "`dropped by kernel` count is in the details.",
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.a = args
        self.pp = args.podprobe
        self.quick = args.quick
        self.rows = []  # (figure, podprobe, baseline, ratio, target)
        self.notes = []  # lines for the details section
        self.tmp = tempfile.mkdtemp(prefix="podprobe-bench-", dir=args.tmp)

    def ns(self, pod):
        return f"{self.a.lab}-{pod}"

    def in_pod(self, pod, argv):
        return ["ip", "netns", "exec", self.ns(pod)] + argv

    def row(self, figure, pp, base, ratio=None, target=""):
        # A side with no samples (a baseline that delivered nothing in a
        # short quick run) has no ratio: say so instead of printing nan.
        if ratio is not None and not math.isfinite(ratio):
            ratio, target = None, "not measured: a side had no samples (see the log)"
        self.rows.append((figure, pp, base, ratio, target))

    def note(self, line):
        self.notes.append(line)

    def has_command(self, *words):
        """podprobe knows this subcommand (capture, grpc land separately)."""
        r = subprocess.run([self.pp, *words, "--help"], capture_output=True)
        return r.returncode == 0

    # ---------------------------------------------------------------- start-up

    def hyperfine(self, pod, commands, runs, warmup):
        """Median wall time (ms) of each command, hyperfine without a shell.
        Rounds alternate the commands' order; the result pools all runs."""
        times = {c: [] for c in commands}
        rounds = 1 if self.quick else 5
        for r in range(rounds):
            order = commands if r % 2 == 0 else list(reversed(commands))
            out = os.path.join(self.tmp, "hyperfine.json")
            argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup),
                    "--runs", str(runs), "--export-json", out, *order]
            r = subprocess.run(self.in_pod(pod, argv), capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"hyperfine failed: {r.stderr.strip()}")
            with open(out) as f:
                for res in json.load(f)["results"]:
                    times[res["command"]].extend(t * 1000 for t in res["times"])
        return {c: statistics.median(t) for c, t in times.items()}

    def startup(self):
        log("start-up: podprobe --version, podprobe dns vs dig")
        runs = 5 if self.quick else 40
        name = "web.default.svc.cluster.local."
        version = f"{self.pp} --version"
        dig_version = "dig -v"
        one = f"{self.pp} dns {name} --race 0 --count 0"
        dig_one = f"dig +tries=1 {name} A"
        walk = f"{self.pp} dns web.default --race 0 --count 0"
        dig_walk = f"dig +search +tries=1 web.default A"
        t = self.hyperfine("client", [version, dig_version, one, dig_one, walk, dig_walk],
                           runs, 3)
        self.row("`--version` wall time (vs `dig -v`)", ms(t[version]), ms(t[dig_version]),
                 t[version] / t[dig_version], target_le(t[version], 5, "ms"))
        self.row(f"one name, `podprobe dns {name}` (A+AAAA) vs `dig` (A)", ms(t[one]),
                 ms(t[dig_one]), t[one] / t[dig_one])
        self.row("search-list walk of `web.default` (A+AAAA per candidate) vs `dig +search` (A)",
                 ms(t[walk]), ms(t[dig_walk]), t[walk] / t[dig_walk])
        self.note(f"- start-up: hyperfine -N in the client pod, {runs} runs x "
                  f"{1 if self.quick else 5} rounds (order alternating), median of all runs. "
                  f"`podprobe dns` runs with `--race 0 --count 0`: resolv.conf, then the lookup.")

    def sizes(self):
        log("size: static binary, image contents")
        size = os.path.getsize(self.pp)
        closure = ldd_closure(["/usr/bin/tcpdump", "/usr/bin/dig"])
        base = sum(os.path.getsize(p) for p in closure)
        # The target is 8 MB in decimal units, the stricter reading.
        self.row("binary size", f"{mib(size)} ({size / 1e6:.2f} MB)",
                 f"{mib(base)} (tcpdump + dig + their {len(closure) - 2} shared libraries)",
                 size / base, target_le(size / 1e6, 8, "MB"))
        # The final image's files, as the Dockerfile assembles them.
        ca = "/etc/ssl/certs/ca-certificates.crt"
        passwd = len("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        group = len("root:x:0:\nnonroot:x:65532:\n")
        image = size + (os.path.getsize(ca) if os.path.exists(ca) else 0) + passwd + group
        self.row("final image contents (binary, CA bundle, passwd, group)", mib(image),
                 f"{mib(base)} (tcpdump + dig closure alone)", image / base)

    # --------------------------------------------------------------------- DNS

    def dns_accuracy(self):
        log("DNS: podprobe's latencies vs a simultaneous tcpdump on the client's eth0")
        names = [f"bench-{i}.cluster.local" for i in range(2 if self.quick else 20)]
        count = 5 if self.quick else 100
        pcap = os.path.join(self.tmp, "dns.pcap")
        cap = self.start_tcpdump("client", ["-i", "eth0", "--time-stamp-precision=nano",
                                            "--immediate-mode",
                                            "-w", pcap, "udp port 53"])
        try:
            argv = [self.pp, "-o", "json", "dns", *names, "web.default.svc.cluster.local.",
                    "--race", "0", "--count", str(count)]
            t0 = time.monotonic()
            r = subprocess.run(self.in_pod("client", argv), capture_output=True, text=True)
            wall = time.monotonic() - t0
            if r.returncode not in (0, 1):
                raise RuntimeError(f"podprobe dns failed: {r.stderr.strip()}")
            report = json.loads(r.stdout)
            time.sleep(0.2)
        finally:
            stats = stop(cap)
        wire = dns_pairs(pcap)
        # Per query: the search walk reports each candidate's A and AAAA.
        diffs = []
        unmatched = 0
        latency = None
        for check in report["checks"]:
            ev = check["evidence"]
            if check["id"] == "dns.search-expansion":
                for lookup in ev["lookups"]:
                    for cand in lookup["candidates"]:
                        for q in cand["queries"]:
                            w = wire.get((cand["fqdn"].lower(), q["qtype"]))
                            if not w or q["rcode"] == "TIMEOUT":
                                unmatched += 1
                                continue
                            diffs.append(q["latency_ms"] - statistics.median(w))
            if check["id"] == "dns.latency":
                latency = ev["results"][0]
        if not diffs:
            raise RuntimeError("no DNS query of podprobe's was found in the capture")
        absd = [abs(d) for d in diffs]
        self.row(f"DNS latency, podprobe minus wire, median abs ({len(diffs)} queries)",
                 f"{statistics.median(absd):.3f} ms", "0 (tcpdump, ns stamps)", None,
                 target_le(statistics.median(absd), 0.5, "ms"))
        self.row("DNS latency, podprobe minus wire, max abs", f"{max(absd):.3f} ms", "0", None,
                 target_le(max(absd), 0.5, "ms"))
        self.note(f"- DNS accuracy: `podprobe dns` with {len(names)} unknown names (each walked through "
                  f"the 4 search domains and as is, A and AAAA: 10 queries a name) while tcpdump "
                  f"captured the client pod's eth0 with nanosecond stamps; each query paired with "
                  f"its wire query/response by name and type. podprobe minus wire: median "
                  f"{statistics.median(diffs):+.3f} ms, min {min(diffs):+.3f}, max {max(diffs):+.3f}; "
                  f"{unmatched} unmatched. tcpdump: {stats.get('dropped', '?')} dropped.")
        if latency:
            w = sorted(wire.get(("web.default.svc.cluster.local.", "A"), []))
            if w:
                # dns.latency reports percentiles, not single queries: compare
                # the distributions, rank by rank.
                for q, key in ((50, "p50_ms"), (99, "p99_ms"), (100, "max_ms")):
                    d = latency[key] - pct(w, q)
                    label = "max" if q == 100 else f"p{q}"
                    self.row(f"`dns.latency` {label} over {latency['count']} queries vs the wire's",
                             f"{latency[key]:.3f} ms", f"{pct(w, q):.3f} ms",
                             latency[key] / pct(w, q), target_within(d, 0.5))
                self.note(f"- `dns.latency` ({latency['count']} A queries of "
                          f"web.default.svc.cluster.local.): p50/p99/max {latency['p50_ms']:.3f}/"
                          f"{latency['p99_ms']:.3f}/{latency['max_ms']:.3f} ms; the wire (these "
                          f"and the walk's one A query): {pct(w, 50):.3f}/{pct(w, 99):.3f}/"
                          f"{max(w):.3f} ms. Whole run {wall * 1000:.0f} ms.")

    def start_tcpdump(self, pod, args, stdout=subprocess.DEVNULL):
        """tcpdump, once it says it is listening."""
        p = subprocess.Popen(self.in_pod(pod, ["tcpdump", "-n", *args]), stdout=stdout,
                             stderr=subprocess.PIPE, text=True)
        line = p.stderr.readline()
        if "listening" not in line:
            p.kill()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        return p

    # ----------------------------------------------------------------- capture

    def capturer(self, tool, sink, immediate=False):
        """argv of a capture of the flood on backend-1's eth0, to `sink`."""
        if tool == "podprobe":
            return self.in_pod("backend-1", [self.pp, "capture", "-i", "eth0",
                                             "-f", FLOOD_FILTER, "-w", sink])
        extra = ["-U"] if sink == "-" and immediate else []
        if immediate == "immediate":
            extra.append("--immediate-mode")
        return self.in_pod("backend-1", ["tcpdump", "-n", "-i", "eth0", *extra, "-w", sink,
                                         FLOOD_FILTER])

    def one_capture(self, tool, mode, count, seconds, pps=0, immediate=False):
        """Runs one capture of one flood; returns its figures."""
        sink = os.path.join(self.tmp, f"{tool}.pcap") if mode == "file" else "-"
        consumer = None
        cap_stdout = subprocess.DEVNULL
        if mode != "file":
            cap_stdout = subprocess.PIPE
        cap = subprocess.Popen(self.capturer(tool, sink, immediate), stdout=cap_stdout,
                               stderr=subprocess.PIPE, text=False)
        try:
            if mode != "file":
                consumer = subprocess.Popen([self.a.pcaprecv, "latency" if pps else "count"],
                                            stdin=cap.stdout, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
                cap.stdout.close()
            time.sleep(SETTLE_S)
            gen = subprocess.run(self.in_pod("client", [self.a.flood, BACKEND_IP, str(FLOOD_PORT),
                                                        str(count), str(seconds), str(PACKET_SIZE),
                                                        str(pps)]),
                                 capture_output=True, text=True, check=True)
            sent = parse_sent(gen.stdout)
            # tcpdump's ring hands a block over only when it is full or 1 s
            # old, and an interrupted tcpdump drops what it has not been given.
            time.sleep(DRAIN_S)
        finally:
            stats = stop(cap)
        res = {"sent": sent["sent"], "rate": sent["pps"], **stats}
        if mode == "file":
            r = subprocess.run([self.a.pcaprecv, "count"], stdin=open(sink, "rb"),
                               capture_output=True, text=True)
            res["records"] = parse_records(r.stderr)
            os.unlink(sink)
        else:
            out, err = consumer.communicate(timeout=30)
            res["records"] = parse_records(err)
            if pps:
                res["latency_us"] = [float(line.split()[1]) for line in out.splitlines()]
        return res

    def capture(self):
        count = 20000 if self.quick else 1000000
        seconds = 2 if self.quick else 10
        repeats = 1 if self.quick else 5
        log(f"capture: {repeats} x (podprobe, tcpdump) x (file, pipe), floods of {count} packets")
        runs = {(t, m): [] for t in ("podprobe", "tcpdump") for m in ("file", "pipe")}
        for r in range(repeats):
            tools = ("podprobe", "tcpdump") if r % 2 == 0 else ("tcpdump", "podprobe")
            for mode in ("file", "pipe"):
                for tool in tools:
                    res = self.one_capture(tool, mode, count, seconds)
                    runs[(tool, mode)].append(res)
                    log(f"  {tool:8} {mode}: sent {res['sent']} at {res['rate']:.0f}/s, "
                        f"captured {res['records']}, dropped {res.get('dropped')}, "
                        f"cpu {res['cpu_s']:.3f} s, rss {res['rss_kib']} KiB")
        for mode in ("file", "pipe"):
            pp, td = runs[("podprobe", mode)], runs[("tcpdump", mode)]
            label = "to a file (`-w FILE`)" if mode == "file" else "to a pipe (`-w -` read by a consumer)"
            cpu_pp = statistics.median(cpu_per_m(x) for x in pp)
            cpu_td = statistics.median(cpu_per_m(x) for x in td)
            self.row(f"capture {label}: CPU s per million packets", f"{cpu_pp:.2f}",
                     f"{cpu_td:.2f}", cpu_pp / cpu_td, target_ratio(cpu_pp / cpu_td, 1.1))
            drop_pp = statistics.median(lost(x) for x in pp)
            drop_td = statistics.median(lost(x) for x in td)
            tgt = "met" if drop_pp == 0 or drop_td > 0 else f"missed: {drop_pp} lost where tcpdump lost 0"
            self.row(f"capture {label}: packets lost (sent - written), median", str(drop_pp),
                     str(drop_td), None, tgt)
            rss_pp = statistics.median(x["rss_kib"] for x in pp) / 1024
            rss_td = statistics.median(x["rss_kib"] for x in td) / 1024
            self.row(f"capture {label}: peak RSS", f"{rss_pp:.1f} MiB", f"{rss_td:.1f} MiB",
                     rss_pp / rss_td)
            for tool, xs in (("podprobe", pp), ("tcpdump", td)):
                self.note(f"- capture {mode}, {tool}: " + "; ".join(
                    f"sent {x['sent']} at {x['rate'] / 1000:.0f}k/s, written {x['records']}, "
                    f"kernel-dropped {x.get('dropped')}, {x['cpu_s']:.2f} s CPU, {x['rss_kib'] // 1024} MiB"
                    for x in xs))
        rates = [x["rate"] for xs in runs.values() for x in xs]
        self.note(f"- flood generator (C, sendmmsg, {PACKET_SIZE}-byte UDP payloads, client pod "
                  f"-> backend-1, captured on backend-1's eth0, filter `{FLOOD_FILTER}`): median "
                  f"{statistics.median(rates) / 1000:.0f}k packets/s")

    def streaming(self):
        count = 300 if self.quick else 2000
        pps = 1000
        repeats = 1 if self.quick else 3
        log(f"streaming latency: {repeats} x {count} packets at {pps}/s, podprobe -w - vs tcpdump -U -w -")
        lat = {"podprobe": [], "tcpdump": [], "tcpdump-immediate": []}
        for r in range(repeats):
            order = ["podprobe", "tcpdump", "tcpdump-immediate"]
            if r % 2:
                order.reverse()
            for tool in order:
                imm = "immediate" if tool == "tcpdump-immediate" else True
                res = self.one_capture(tool.split("-")[0], "pipe", count, count / pps + 5, pps, imm)
                lat[tool].extend(res["latency_us"])
                log(f"  {tool}: {len(res['latency_us'])} of {res['sent']} records, "
                    f"median {pct(sorted(res['latency_us']), 50) / 1000:.2f} ms")
        pp = sorted(lat["podprobe"])
        td = sorted(lat["tcpdump"])
        ti = sorted(lat["tcpdump-immediate"])
        for q in (50, 99):
            a, b = pct(pp, q) / 1000, pct(td, q) / 1000
            self.row(f"streaming latency p{q}, send to `-w -` reader (vs `tcpdump -U -w -`)",
                     f"{a:.2f} ms", f"{b:.2f} ms", a / b, target_ratio(a / b, 1.0))
        self.note(f"- streaming: {count} packets at {pps}/s per run, {repeats} runs each, latency = "
                  f"reader's read() time minus the send time stamped in the payload "
                  f"(CLOCK_REALTIME). `tcpdump -U --immediate-mode -w -` for reference: "
                  f"p50 {pct(ti, 50) / 1000:.2f} ms, p99 {pct(ti, 99) / 1000:.2f} ms. "
                  f"Samples: podprobe {len(pp)}, tcpdump -U {len(td)}, immediate {len(ti)}.")

    # -------------------------------------------------------------------- gRPC

    def grpc(self):
        rpcs = 200 if self.quick else 5000
        conc = 16
        repeats = 1 if self.quick else 5
        log(f"gRPC: {repeats} x {rpcs} RPCs, one channel (the Service) vs one channel per endpoint")
        rate = {"single-channel": [], "per-endpoint": []}
        p50 = {"single-channel": [], "per-endpoint": []}
        for r in range(repeats):
            order = ["single", "headless"] if r % 2 == 0 else ["headless", "single"]
            for kind in order:
                argv = [self.pp, "-o", "json", "grpc", GRPC_SERVICE, "--rpcs", str(rpcs),
                        "--concurrency", str(conc)]
                if kind == "headless":
                    argv += ["--headless", HEADLESS]
                p = subprocess.run(self.in_pod("client", argv), capture_output=True, text=True)
                if p.returncode not in (0, 1):
                    raise RuntimeError(f"podprobe grpc failed: {p.stderr.strip()}")
                check = json.loads(p.stdout)["checks"][0]
                for run in check["evidence"]["runs"]:
                    if run["ok"] != rpcs:
                        raise RuntimeError(f"podprobe grpc: {run['ok']} of {rpcs} RPCs answered")
                    if kind == "headless" or run["mode"] == "single-channel":
                        # Each run's own duration: its connects and calls.
                        rate[run["mode"]].append(rpcs / run["duration_ms"] * 1000)
                        p50[run["mode"]].append(run["p50_ms"])
                log(f"  {kind}: {check['duration_ms']:.0f} ms")
        single = statistics.median(rate["single-channel"])
        per = statistics.median(rate["per-endpoint"])
        self.row(f"gRPC RPC/s, one channel to the Service ({rpcs} RPCs, concurrency {conc})",
                 f"{single:.0f}", "-", None)
        self.row("gRPC RPC/s, one channel per endpoint (`--headless`), vs one channel",
                 f"{per:.0f}", f"{single:.0f}", per / single)
        self.note(f"- gRPC: against the lab's 3 backends (`podprobe serve`); `podprobe grpc {GRPC_SERVICE}` "
                  f"(one channel) and `... --headless {HEADLESS}` (one channel, then one per "
                  f"endpoint), alternating, {repeats} each. RPC/s = RPCs / the run's own "
                  f"`duration_ms` (its connects included). RPC p50 as podprobe reports it: one channel "
                  f"{statistics.median(p50['single-channel']):.2f} ms, per endpoint "
                  f"{statistics.median(p50['per-endpoint']):.2f} ms.")

    def grpc_vs_grpcio(self):
        """One channel, podprobe grpc against grpcio's asyncio client, the
        same calls to the same backend: calls per second and CPU."""
        rpcs = 2000 if self.quick else 20000
        conc = 16
        repeats = 1 if self.quick else 5
        target = f"{BACKEND_IP}:50051"
        client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpc_client.py")
        log(f"gRPC: {repeats} x {rpcs} RPCs over one channel to {target}, podprobe vs grpcio asyncio")
        res = {"podprobe": [], "grpcio": []}
        for r in range(repeats):
            order = ["podprobe", "grpcio"] if r % 2 == 0 else ["grpcio", "podprobe"]
            for kind in order:
                if kind == "podprobe":
                    argv = [self.pp, "-o", "json", "grpc", target, "--rpcs", str(rpcs),
                            "--concurrency", str(conc)]
                else:
                    argv = [self.a.grpc_python, client, target, str(rpcs), str(conc)]
                out, ru = run_rusage(self.in_pod("client", argv))
                if kind == "podprobe":
                    run = json.loads(out)["checks"][0]["evidence"]["runs"][0]
                    ok, seconds, calls_cpu = run["ok"], run["duration_ms"] / 1000, None
                else:
                    o = json.loads(out)
                    ok, seconds, calls_cpu = o["ok"], o["seconds"], o["cpu_s"]
                if ok != rpcs:
                    raise RuntimeError(f"{kind}: {ok} of {rpcs} RPCs answered")
                res[kind].append({"rate": rpcs / seconds, "cpu_s": ru, "calls_cpu_s": calls_cpu})
                log(f"  {kind}: {rpcs / seconds:.0f} RPC/s, {ru:.2f} CPU s")
        med = lambda kind, key: statistics.median(x[key] for x in res[kind])
        pp_rate, py_rate = med("podprobe", "rate"), med("grpcio", "rate")
        self.row(f"gRPC RPC/s, one channel to one backend ({rpcs} RPCs, concurrency {conc}), "
                 f"vs grpcio asyncio", f"{pp_rate:.0f}", f"{py_rate:.0f}", pp_rate / py_rate,
                 target_at_least(pp_rate / py_rate, 2))
        pp_cpu, py_cpu = med("podprobe", "cpu_s"), med("grpcio", "cpu_s")
        self.row(f"gRPC CPU seconds for {rpcs} RPCs (whole process), vs grpcio asyncio",
                 f"{pp_cpu:.2f}", f"{py_cpu:.2f}", pp_cpu / py_cpu)
        self.note(f"- gRPC vs grpcio: `podprobe grpc {target} --rpcs {rpcs} --concurrency {conc}` "
                  f"and `bench/grpc_client.py` (grpcio {self.grpcio_version()} `grpc.aio`, one "
                  f"channel, {conc} tasks calling /podprobe.v1.Identity/Whoami with raw bytes, the "
                  f"reply not decoded) from the client pod to backend-1's `podprobe serve`, "
                  f"alternating, {repeats} each, medians. RPC/s: podprobe's single-channel run "
                  f"(its connect included), grpcio's calls after one warm-up call. CPU: user+sys "
                  f"of the whole process (`wait4`): podprobe's start-up, name lookup and probe "
                  f"discovery included; grpcio's calls alone took "
                  f"{med('grpcio', 'calls_cpu_s'):.2f} CPU s of its {py_cpu:.2f}.")

    def grpcio_version(self):
        r = subprocess.run([self.a.grpc_python, "-c", "import grpc; print(grpc.__version__)"],
                           capture_output=True, text=True)
        return r.stdout.strip() or "?"

    # ------------------------------------------------------------------- watch

    def watch(self):
        duration = 12 if self.quick else 600
        warmup = 4 if self.quick else 60
        sample_every = 1 if self.quick else 5
        log(f"watch: --interval 1s for {duration} s in the client pod, scraped every second")
        argv = [self.pp, "watch", "--interval", "1s", "--listen", f"127.0.0.1:{WATCH_PORT}",
                "--timeout", "1s", "--name", "web.default.svc.cluster.local.",
                "--tcp", "web.default:80", "--grpc", GRPC_SERVICE]
        log_path = os.path.join(self.tmp, "watch.log")
        with open(log_path, "w") as err:
            proc = subprocess.Popen(self.in_pod("client", argv), stdout=subprocess.DEVNULL,
                                    stderr=err)
        scraper = None
        try:
            # Prometheus's part: a scrape a second, from inside the pod.
            scraper = subprocess.Popen(
                self.in_pod("client", ["python3", "-c", SCRAPER, str(WATCH_PORT), str(duration)]),
                stdout=subprocess.PIPE, text=True)
            samples = []  # (seconds since start, RSS KiB, CPU s, cycles, open fds)
            start = time.monotonic()
            while time.monotonic() - start < duration:
                time.sleep(sample_every)
                if proc.poll() is not None:
                    raise RuntimeError(f"podprobe watch exited: {open(log_path).read().strip()}")
                samples.append((time.monotonic() - start, *proc_usage(proc.pid),
                                cycles(open(log_path).read()),
                                len(os.listdir(f"/proc/{proc.pid}/fd"))))
            out, _ = scraper.communicate(timeout=30)
            scrapes = sorted(json.loads(out))
        finally:
            if scraper and scraper.poll() is None:
                scraper.kill()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        text = open(log_path).read()
        if proc.returncode != 0 or "stopping after" not in text:
            raise RuntimeError(f"podprobe watch did not stop cleanly ({proc.returncode}): {text[-500:]}")
        warm = [s for s in samples if s[0] >= warmup]
        window = max(1, len(warm) // 10)
        base = statistics.median(s[1] for s in warm[:window])
        end = statistics.median(s[1] for s in warm[-window:])
        peak = max(s[1] for s in warm)
        growth = (end - base) / base * 100
        (_, _, cpu0, c0, fds0), (_, _, cpu1, c1, fds1) = warm[0], warm[-1]
        per_cycle = (cpu1 - cpu0) / max(c1 - c0, 1) * 1000
        overruns = text.count("longer than the interval")
        self.row(f"`watch --interval 1s` RSS after {warmup} s warm-up, then at the end of {duration} s",
                 f"{base / 1024:.1f} -> {end / 1024:.1f} MiB ({growth:+.1f} %)", "-", None,
                 target_le(growth, 10, "% growth"))
        self.row("`watch` CPU (user+sys) per cycle: resolv.conf, 1 name, 1 TCP target, 300 gRPC RPCs",
                 f"{per_cycle:.1f} ms", "-", None)
        self.row(f"`/metrics` scrape latency p50 / p99 / max ({len(scrapes)} scrapes)",
                 f"{pct(scrapes, 50):.2f} / {pct(scrapes, 99):.2f} / {scrapes[-1]:.2f} ms", "-",
                 None, target_le(pct(scrapes, 99), 10, "ms (p99)"))
        self.note(f"- watch: `podprobe {' '.join(argv[1:])}` in the client pod for {duration} s; "
                  f"{c1} cycles, {overruns} overruns; open file descriptors {fds0} after "
                  f"warm-up, {fds1} at the end; RSS sampled every {sample_every} s from "
                  f"/proc/PID/status (peak after warm-up {peak / 1024:.1f} MiB; growth = median of "
                  f"the last tenth of the samples over the first tenth after warm-up), CPU from "
                  f"/proc/PID/stat over the cycles after warm-up; scrapes: a new connection and "
                  f"`GET /metrics` each second from inside the pod, timed to the last byte.")

    # ------------------------------------------------------------------ output

    # ----------------------------------------------------------------- analyze

    def analyze(self):
        """`capture -r FILE --analyze` against `tshark -qz expert` on floods
        written as pcap files: CPU (user+sys) and peak RSS of each."""
        count = 20_000 if self.quick else 1_000_000
        repeats = 1 if self.quick else 3
        floods = [("DNS queries never answered", write_dns_flood),
                  ("SYNs never answered", write_syn_flood)]
        for label, write in floods:
            path = os.path.join(self.tmp, f"flood-{write.__name__}.pcap")
            write(path, count)
            tools = {
                "podprobe": [self.pp, "capture", "-r", path, "--analyze", "-o", "json"],
                "tshark": ["tshark", "-n", "-q", "-z", "expert", "-r", path],
            }
            results = {"podprobe": [], "tshark": []}
            for i in range(repeats):
                order = ["podprobe", "tshark"] if i % 2 == 0 else ["tshark", "podprobe"]
                for tool in order:
                    results[tool].append(cpu_and_peak_rss(tools[tool]))
            pp_cpu = statistics.median(r["cpu_s"] for r in results["podprobe"])
            ts_cpu = statistics.median(r["cpu_s"] for r in results["tshark"])
            pp_rss = max(r["rss_kib"] for r in results["podprobe"]) / 1024
            ts_rss = max(r["rss_kib"] for r in results["tshark"]) / 1024
            ratio = pp_cpu / ts_cpu if ts_cpu else float("nan")
            self.row(f"`--analyze` CPU, {count:,} {label}", f"{pp_cpu:.2f} s", f"{ts_cpu:.2f} s",
                     ratio, target_ratio(ratio, 1.0))
            self.row(f"`--analyze` peak RSS, {count:,} {label}", f"{pp_rss:.1f} MiB",
                     f"{ts_rss:.1f} MiB", pp_rss / ts_rss if ts_rss else None,
                     target_le(pp_rss, ANALYZE_RSS_CAP_MIB, "MiB"))
            verdict = results["podprobe"][0].get("verdict", "?")
            self.note(f"- analyze, {label}: a pcap of {count:,} packets ({os.path.getsize(path) / 2**20:.0f} MiB) "
                      f"written by bench.py; `podprobe capture -r FILE --analyze -o json` (verdict {verdict}) vs "
                      f"`tshark -n -q -z expert -r FILE`, {repeats} runs each, alternating, median CPU "
                      f"(user+sys) and largest peak RSS from GNU time.")
    # ------------------------------------------------------- Envoy config dump

    def envoy_dump(self):
        """Peak RSS of `podprobe keepalive` reading a large /config_dump from
        an admin API on loopback, against python3's json.load of the same
        bytes (what a script reading the dump does)."""
        size_mb = 8 if self.quick else 100
        log(f"envoy dump: a {size_mb} MB config dump read from an admin API")
        path = os.path.join(self.tmp, "admin", "config_dump")
        os.makedirs(os.path.dirname(path))
        size = write_large_dump(ISTIO_DUMP, path, size_mb * 10**6)
        if size < 10**7 and not self.quick:
            raise RuntimeError(f"the generated dump has only {size} bytes")
        admin = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                  "--directory", os.path.dirname(path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        app = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                "--directory", self.tmp],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            admin_port, app_port = serving_port(admin), serving_port(app)
            rounds = 1 if self.quick else 3
            pp, base, found = [], [], None
            for _ in range(rounds):
                # podprobe and the baseline alternate.
                rss, out = peak_rss([self.pp, "-o", "json", "keepalive", f"127.0.0.1:{app_port}",
                                     "--envoy-admin", f"http://127.0.0.1:{admin_port}"])
                pp.append(rss)
                found = json.loads(out)["checks"][0]["evidence"].get("cluster")
                rss, _ = peak_rss([sys.executable, "-c",
                                   "import json,sys; json.load(open(sys.argv[1], 'rb'))", path])
                base.append(rss)
        finally:
            for proc in (admin, app):
                proc.kill()
                proc.wait()
        if not found:
            raise RuntimeError("podprobe found no cluster in the generated dump")
        pp_rss, base_rss = statistics.median(pp), statistics.median(base)
        self.row(f"peak RSS reading a {size / 1e6:.0f} MB Envoy config dump from the admin API",
                 f"{mib(pp_rss)} ({pp_rss / size:.2f}x the dump)",
                 f"{mib(base_rss)} (python3 json.load)", pp_rss / base_rss,
                 # A small dump measures the binary's own few MiB, not the parser.
                 "" if self.quick else target_le(pp_rss / size, 2, "x the dump"))
        self.note(f"- Envoy dump: the Istio 1.18 sidecar fixture's clusters, listeners, routes and "
                  f"endpoints repeated under renamed hosts to {size / 1e6:.1f} MB, served by "
                  f"`python3 -m http.server` as /config_dump; `podprobe keepalive` reads it (and "
                  f"routes through it: cluster {found}); peak RSS from GNU time, median of {rounds}, alternating with the baseline.")

    def render(self, missing):
        lines = ["| figure | podprobe | baseline | ratio | target |", "|---|---|---|---|---|"]
        for fig, pp, base, ratio, tgt in self.rows:
            r = f"{ratio:.2f}" if ratio is not None else "-"
            lines.append(f"| {fig} | {pp} | {base} | {r} | {tgt} |")
        table = "\n".join(lines)
        print(table)
        version = subprocess.run([self.pp, "--version"], capture_output=True, text=True).stdout.strip()
        doc = [
            "# podprobe benchmarks",
            "",
            f"`bench/run{' --quick' if self.quick else ''}{self.a.only_flag}`, {self.a.started}. Ratio = podprobe / baseline "
            "(below 1 is better for times, CPU and sizes).",
            "",
            "## Machine",
            "",
            *machine(self.a.loadavg),
            f"- podprobe: `{version}`, {self.pp} ({self.a.commit})",
            f"- baselines: {tool_versions()}",
            "",
            "## Results",
            "",
            table,
            "",
        ]
        if missing:
            doc += ["Not measured in this run: " + "; ".join(missing) + ".", ""]
        doc += ["## Details", "", *self.notes, "", "## Reading the figures", "", *CAVEATS, ""]
        with open(self.a.out, "w") as f:
            f.write("\n".join(doc))
        log(f"wrote {self.a.out}")


# ------------------------------------------------------------------- helpers

WATCH_PORT = 9090

# Scrapes http://127.0.0.1:PORT/metrics once a second for DURATION seconds;
# prints the latencies (ms) as JSON.
SCRAPER = """
import http.client, json, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
end, times = time.monotonic() + duration, []
while time.monotonic() < end:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        r = c.getresponse()
        r.read()
        if r.status == 200:
            times.append((time.monotonic() - t) * 1000)
        c.close()
    except OSError:
        pass
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
print(json.dumps(times))
"""


def proc_usage(pid):
    """(RSS KiB, user+sys CPU seconds) of a running process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def cycles(log_text):
    """Cycles `podprobe watch` has logged so far."""
    found = re.findall(r"cycle (\d+): ", log_text)
    return int(found[-1]) if found else 0


def stop(proc):
    """Stops a capture with SIGINT as a person would; returns its rusage
    (CPU seconds user+sys, peak RSS KiB) and the statistics it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            raise RuntimeError("a capture was reaped elsewhere (interrupted?)") from None
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    res = {"cpu_s": ru.ru_utime + ru.ru_stime, "rss_kib": ru.ru_maxrss}
    m = re.search(r"(\d+) packets? captured", err)
    if m:
        res["captured"] = int(m.group(1))
    m = re.search(r"(\d+) (?:packets )?dropped by kernel", err)
    if m:
        res["dropped"] = int(m.group(1))
    return res


# The analysis state's budget (capture --analyze, README): the whole process
# stays within it on a flood.
ANALYZE_RSS_CAP_MIB = 64


def cpu_and_peak_rss(argv):
    """Runs a command to its end under GNU time (wait4 on a child of this
    process would count this process's pages in its peak); its CPU seconds
    (user+sys), peak RSS (KiB) and, for podprobe's JSON report, the verdict."""
    r = subprocess.run(["/usr/bin/time", "-f", "%x %U %S %M", *argv], capture_output=True)
    last = r.stderr.decode(errors="replace").strip().splitlines()[-1]
    code, user, system, rss = last.split()
    res = {"cpu_s": float(user) + float(system), "rss_kib": int(rss)}
    if argv[1:2] == ["capture"]:
        if code not in ("0", "1"):
            raise RuntimeError(f"{' '.join(argv)} exited {code}")
        res["verdict"] = json.loads(r.stdout)["verdict"]
    elif code != "0":
        raise RuntimeError(f"{' '.join(argv)} exited {code}")
    return res


def write_pcap(path, packets, spacing_us=100):
    """A classic pcap (Ethernet, microseconds) of the given frames, one every
    `spacing_us` from a fixed start (a million of them span 100 s, so most
    queries and SYNs are old enough to count as unanswered)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(packets):
            t = 1_700_000_000_000_000 + i * spacing_us
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), len(frame)))
            f.write(frame)


def ipv4(src, dst, proto, payload):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                         src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return b"\x00" * 12 + b"\x08\x00" + header + payload


def write_dns_flood(path, count):
    """`count` A queries, each a different name from its own client socket,
    to one DNS server, none answered."""
    server = 0x0A60000A  # 10.96.0.10

    def frames():
        for i in range(count):
            client = 0x0A000000 + (i >> 10)
            name = b"".join(bytes([len(p)]) + p for p in (b"n%d" % i, b"example", b"com")) + b"\x00"
            dns = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
            udp = struct.pack("!HHHH", 1024 + i % 60000, 53, 8 + len(dns), 0) + dns
            yield ipv4(client, server, 17, udp)
    write_pcap(path, frames())


def write_syn_flood(path, count):
    """`count` SYNs from different sources to one port, none answered."""
    server = 0x0AF4000B  # 10.244.0.11

    def frames():
        for i in range(count):
            tcp = struct.pack("!HHIIBBHHH", 1024 + i % 60000, 8080, i, 0, 0x50, 0x02, 64240, 0, 0)
            yield ipv4(0x0A000000 + (i >> 6), server, 6, tcp)
    write_pcap(path, frames())


def parse_sent(out):
    m = re.search(r"sent (\d+) seconds ([\d.]+) pps (\d+)", out)
    if not m:
        raise RuntimeError(f"flood: unexpected output {out!r}")
    return {"sent": int(m.group(1)), "seconds": float(m.group(2)), "pps": float(m.group(3))}


def parse_records(err):
    m = re.search(r"records (\d+)", err)
    if not m:
        raise RuntimeError(f"pcaprecv: {err.strip()}")
    return int(m.group(1))


def cpu_per_m(x):
    return x["cpu_s"] / max(x["records"], 1) * 1e6


def lost(x):
    return max(x["sent"] - x["records"], 0)


def pct(sorted_values, q):
    """Nearest-rank percentile, as podprobe reports them."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, -(-q * len(sorted_values) // 100) - 1))
    return sorted_values[int(k)]


def ms(v):
    return f"{v:.2f} ms"


def mib(n):
    return f"{n / 2**20:.2f} MiB"


def target_le(value, limit, unit):
    if value <= limit:
        return f"<= {limit} {unit}: met"
    return f"<= {limit} {unit}: missed by {value - limit:.2f} {unit}"


def target_within(diff_ms, limit_ms):
    if abs(diff_ms) <= limit_ms:
        return f"within {limit_ms} ms: met ({diff_ms:+.3f} ms)"
    return f"within {limit_ms} ms: missed by {abs(diff_ms) - limit_ms:.3f} ms ({diff_ms:+.3f} ms)"


def target_ratio(ratio, limit):
    if ratio <= limit:
        return f"<= {limit}x: met"
    return f"<= {limit}x: missed by {ratio / limit:.2f}x"


def target_at_least(ratio, limit):
    if ratio >= limit:
        return f">= {limit}x: met"
    return f">= {limit}x: missed ({ratio:.2f}x)"


def run_rusage(argv):
    """Runs argv to completion: its stdout and its user+sys CPU seconds."""
    # `ip netns exec` execs the program itself: the pid's rusage is its own.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} failed: {err.strip()}")
    return out, ru.ru_utime + ru.ru_stime


def ldd_closure(binaries):
    files = set(binaries)
    for b in binaries:
        out = subprocess.run(["ldd", b], capture_output=True, text=True).stdout
        for m in re.finditer(r"(/\S+) \(0x", out):
            files.add(os.path.realpath(m.group(1)))
    return sorted(files)


def dns_pairs(path):
    """{(qname, qtype): [latency ms, ...]} of the query/response pairs in a
    pcap (Ethernet, IPv4, UDP), paired by client port, id, name and type."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data)[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    pos, pending, pairs = 24, {}, {}
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        t = sec + frac * scale
        if len(pkt) < 14 + 20 + 8 + 12 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        if pkt[23] != 17:
            continue
        udp = 14 + ihl
        sport, dport = struct.unpack_from("!HH", pkt, udp)
        dns = pkt[udp + 8:]
        qid, flags = struct.unpack_from("!HH", dns)
        name, off = [], 12
        while off < len(dns) and dns[off]:
            n = dns[off]
            name.append(dns[off + 1:off + 1 + n].decode(errors="replace"))
            off += 1 + n
        if off + 5 > len(dns):
            continue
        qtype = {1: "A", 28: "AAAA"}.get(struct.unpack_from("!H", dns, off + 1)[0], "?")
        qname = ".".join(name).lower() + "."
        is_response = flags & 0x8000
        client_port = dport if is_response else sport
        key = (client_port, qid, qname, qtype)
        if not is_response:
            pending[key] = t
        elif key in pending:
            pairs.setdefault((qname, qtype), []).append((t - pending.pop(key)) * 1000)
    return pairs


ISTIO_DUMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                          "envoy", "istio-1.18-deathstarbench-config_dump.json")


def write_large_dump(fixture, path, target):
    """A config dump of about `target` bytes: the fixture's dynamic lists
    repeated with the service hosts renamed per copy. Returns its size."""
    with open(fixture) as f:
        doc = json.load(f)
    lists = []
    for section in doc["configs"]:
        for key, value in section.items():
            if key.startswith("dynamic_") and isinstance(value, list) and value:
                lists.append((section, key, ",".join(json.dumps(e) for e in value)))
    one = sum(len(text) for _, _, text in lists)
    copies = max(1, target // max(one, 1))
    for n, (section, key, text) in enumerate(lists):
        section[key] = f"@@LIST{n}@@"
    out = json.dumps(doc)
    for n, (_, key, text) in enumerate(lists):
        body = ",".join(text.replace(".svc.cluster.local", f".svc{i}.cluster.local") if i else text
                        for i in range(copies))
        out = out.replace(f'"@@LIST{n}@@"', f"[{body}]")
    with open(path, "w") as f:
        f.write(out)
    return len(out)


def peak_rss(argv):
    """Peak RSS (bytes) and stdout of a command, from GNU time: wait4 on a
    child forked from this process would count this process's own pages."""
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    if not last.isdigit():
        raise RuntimeError(f"{argv[0]} failed: {r.stderr.strip()[-300:]}")
    return int(last) * 1024, r.stdout


def serving_port(proc):
    """The port `python3 -m http.server 0` chose, from its first line."""
    line = proc.stdout.readline()
    m = re.search(r"port (\d+)", line)
    if not m:
        raise RuntimeError(f"http.server did not start: {line!r}")
    return int(m.group(1))


def machine(loadavg):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return [
        f"- {os.cpu_count()} CPUs ({cpu}), {mem} RAM",
        f"- kernel {platform.release()}, {distro()}",
        f"- load average at start: {loadavg} (the machine is shared: compare ratios, not absolutes)",
    ]


def distro():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def tool_versions():
    td = subprocess.run(["tcpdump", "--version"], capture_output=True, text=True).stdout.splitlines()
    dig = subprocess.run(["dig", "-v"], capture_output=True, text=True)
    return f"{', '.join(td[:2])}; {(dig.stdout + dig.stderr).strip()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--podprobe", required=True)
    ap.add_argument("--lab", required=True)
    ap.add_argument("--flood", required=True)
    ap.add_argument("--pcaprecv", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--commit", default="?")
    ap.add_argument("--quick", action="store_true")
    every = "startup,size,dns,capture,streaming,grpc,watch,envoy,analyze"
    ap.add_argument("--only", default=every)
    ap.add_argument("--grpc-python", default="/opt/podprobe-testenv/bin/python3",
                    help="a Python with grpcio, for the gRPC baseline")
    args = ap.parse_args()
    args.only_flag = "" if args.only == every else f" --only {args.only}"
    with open("/proc/loadavg") as f:
        args.loadavg = " ".join(f.read().split()[:3])
    args.started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    b = Bench(args)
    only = args.only.split(",")
    missing = []
    sections = [("startup", b.startup, None), ("size", b.sizes, None), ("dns", b.dns_accuracy, "dns"),
                ("capture", b.capture, "capture"), ("streaming", b.streaming, "capture"),
                ("grpc", b.grpc, "grpc"), ("grpc", b.grpc_vs_grpcio, "grpc"),
                ("watch", b.watch, "watch"), ("envoy", b.envoy_dump, "keepalive"),
                ("analyze", b.analyze, "capture")]
    for name, run, command in sections:
        if name not in only:
            continue
        if command and not b.has_command(command):
            missing.append(f"{name} (this podprobe has no `{command}` command)")
            continue
        run()
    b.render(missing)


if __name__ == "__main__":
    main()
