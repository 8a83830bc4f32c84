# syntax=docker/dockerfile:1
#
# podprobe: one static binary on an empty base, running as a numeric
# non-root user so that pods with `runAsNonRoot` accept it.
#
#   docker build -t podprobe .                    the minimal image (default)
#   docker build --target full -t podprobe:full . plus tcpdump, dig, curl, ip,
#                                                 conntrack, iptables, nft and
#                                                 ipvsadm

FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/setup scripts/setup
RUN scripts/setup build
COPY . .
# The same script CI builds and tests the static binary with.
RUN scripts/build-static /out/podprobe
# The final image's files: the binary, CA roots for TLS probes, a user and
# group 65532 so tools that look the user up find it, and a writable /tmp.
RUN mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp \
    && chmod 1777 /rootfs/tmp \
    && cp /out/podprobe /rootfs/usr/local/bin/podprobe \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group

# netshoot's toolbox beside podprobe, for people who want both.
FROM debian:bookworm-slim AS full
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates conntrack curl dnsutils iproute2 iptables ipvsadm nftables tcpdump \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/podprobe /usr/local/bin/podprobe
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podprobe"]
CMD ["doctor"]

# The default target: nothing but the files above.
FROM scratch AS podprobe
COPY --from=build /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podprobe"]
CMD ["doctor"]
