"""The baseline for `podprobe grpc`'s single channel: grpcio's asyncio
client making N unary calls of /podprobe.v1.Identity/Whoami, C at a time,
over one channel, as a Python service would. Run by bench.py with the test
environment's Python (grpcio).

Usage: grpc_client.py TARGET RPCS CONCURRENCY
Prints one JSON line: {"rpcs", "ok", "seconds", "cpu_s"} for the calls alone
(the connection is made, and one call answered, before the clock starts).
"""

import asyncio
import json
import sys
import time

import grpc


async def main(target: str, rpcs: int, concurrency: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        # Raw bytes both ways: an empty request, the reply left undecoded
        # (podprobe decodes it; the baseline does no more than it must).
        whoami = channel.unary_unary("/podprobe.v1.Identity/Whoami")
        await whoami(b"", timeout=5)
        left = rpcs
        ok = 0

        async def worker() -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                try:
                    await whoami(b"", timeout=5)
                    ok += 1
                except grpc.aio.AioRpcError:
                    pass

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
    print(json.dumps({"rpcs": rpcs, "ok": ok, "seconds": seconds, "cpu_s": cpu_s}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
