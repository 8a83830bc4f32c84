/* Reads a pcap stream (a capture's `-w -`) on stdin.
 *
 *   pcaprecv count            prints "records N bytes B"
 *   pcaprecv latency          also prints, per record carrying flood's
 *                             payload, "SEQ LATENCY_US": the record's arrival
 *                             here minus the send time stamped in it
 *
 * Arrival is the CLOCK_REALTIME read right after the read() that completed
 * the record, so buffering anywhere upstream counts as latency.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int latency = argc > 1 && strcmp(argv[1], "latency") == 0;
    static unsigned char buf[BUF];
    size_t have = 0, pos = 0;
    int header_done = 0;
    uint64_t records = 0, bytes = 0;
    for (;;) {
        if (pos > 0) {
            memmove(buf, buf + pos, have - pos);
            have -= pos;
            pos = 0;
        }
        ssize_t r = read(0, buf + have, BUF - have);
        if (r <= 0)
            break;
        uint64_t arrived = now_ns();
        have += (size_t)r;
        bytes += (uint64_t)r;
        if (!header_done) {
            if (have < 24)
                continue;
            uint32_t magic;
            memcpy(&magic, buf, 4);
            if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) {
                fprintf(stderr, "pcaprecv: not a little-endian pcap stream\n");
                return 1;
            }
            pos = 24;
            header_done = 1;
        }
        while (have - pos >= 16) {
            uint32_t incl;
            memcpy(&incl, buf + pos + 8, 4);
            if (incl > BUF - 16) {
                fprintf(stderr, "pcaprecv: record of %u bytes\n", incl);
                return 1;
            }
            if (have - pos < 16 + (size_t)incl)
                break;
            records++;
            if (latency) {
                unsigned char *d = buf + pos + 16;
                unsigned char *m = memmem(d, incl, "PPBENCH1", 8);
                if (m && m + 24 <= d + incl) {
                    uint64_t sent, seq;
                    memcpy(&sent, m + 8, 8);
                    memcpy(&seq, m + 16, 8);
                    printf("%llu %.3f\n", (unsigned long long)seq, ((double)arrived - (double)sent) / 1e3);
                }
            }
            pos += 16 + incl;
        }
    }
    fprintf(stderr, "records %llu bytes %llu\n", (unsigned long long)records, (unsigned long long)bytes);
    return 0;
}
