/* UDP traffic for the capture benchmarks, bounded in packets and seconds.
 *
 *   flood DST_IP PORT COUNT MAX_SECONDS SIZE [PPS]
 *
 * PPS 0 (default) sends as fast as the kernel takes them (sendmmsg batches);
 * PPS > 0 paces the packets and stamps each just before it leaves. Every
 * payload starts with "PPBENCH1", the send time (CLOCK_REALTIME ns) and a
 * sequence number, so a pcap reader can time each packet's trip.
 * Prints "sent N seconds S pps R" on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SIZE 1400

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void stamp(unsigned char *p, uint64_t seq) {
    uint64_t t = now_ns(CLOCK_REALTIME);
    memcpy(p, "PPBENCH1", 8);
    memcpy(p + 8, &t, 8);
    memcpy(p + 16, &seq, 8);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: flood DST_IP PORT COUNT MAX_SECONDS SIZE [PPS]\n");
        return 2;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
        fprintf(stderr, "flood: bad address %s\n", argv[1]);
        return 2;
    }
    uint64_t count = strtoull(argv[3], NULL, 10);
    double max_s = atof(argv[4]);
    int size = atoi(argv[5]);
    double pps = argc > 6 ? atof(argv[6]) : 0;
    if (size < 24 || size > MAX_SIZE || max_s <= 0) {
        fprintf(stderr, "flood: SIZE must be 24..%d and MAX_SECONDS > 0\n", MAX_SIZE);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("flood: socket");
        return 3;
    }
    static unsigned char buf[BATCH][MAX_SIZE];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t start = now_ns(CLOCK_MONOTONIC);
    uint64_t deadline = start + (uint64_t)(max_s * 1e9);
    uint64_t sent = 0;
    while (sent < count && now_ns(CLOCK_MONOTONIC) < deadline) {
        if (pps > 0) {
            uint64_t due = start + (uint64_t)((double)sent * 1e9 / pps);
            struct timespec ts = {.tv_sec = due / 1000000000ull, .tv_nsec = due % 1000000000ull};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            stamp(buf[0], sent);
            if (send(fd, buf[0], size, 0) == size)
                sent++;
            continue;
        }
        int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
        for (int i = 0; i < n; i++)
            stamp(buf[i], sent + i);
        int r = sendmmsg(fd, msgs, n, 0);
        if (r > 0)
            sent += r;
        else if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) {
            perror("flood: sendmmsg");
            return 3;
        }
    }
    double secs = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
    printf("sent %llu seconds %.6f pps %.0f\n", (unsigned long long)sent, secs, sent / secs);
    return 0;
}
