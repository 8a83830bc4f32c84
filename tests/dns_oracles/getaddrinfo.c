/* getaddrinfo(NAME, AF_UNSPEC) timed, as one JSON line: the addresses, or
 * getaddrinfo's error by name. Built by the DNS differential test against
 * glibc (gcc) and musl (musl-gcc -static). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static const char *eai_name(int rc)
{
	switch (rc) {
	case -2: return "EAI_NONAME";
	case -3: return "EAI_AGAIN";
	case -4: return "EAI_FAIL";
	case -5: return "EAI_NODATA";
	case -10: return "EAI_MEMORY";
	case -11: return "EAI_SYSTEM";
	default: return "EAI_OTHER";
	}
}

int main(int argc, char **argv)
{
	struct addrinfo hints, *res = NULL, *a;
	struct timespec t0, t1;
	char text[INET6_ADDRSTRLEN];
	int rc, first = 1;
	double ms;

	if (argc != 2) {
		fprintf(stderr, "usage: %s NAME\n", argv[0]);
		return 2;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = getaddrinfo(argv[1], NULL, &hints, &res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	if (rc != 0) {
		printf("{\"ms\":%.3f,\"error\":\"%s\",\"addresses\":[]}\n", ms, eai_name(rc));
		return 0;
	}
	printf("{\"ms\":%.3f,\"error\":null,\"addresses\":[", ms);
	for (a = res; a; a = a->ai_next) {
		const void *addr = a->ai_family == AF_INET
			? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
			: (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
		inet_ntop(a->ai_family, addr, text, sizeof text);
		printf("%s\"%s\"", first ? "" : ",", text);
		first = 0;
	}
	printf("]}\n");
	freeaddrinfo(res);
	return 0;
}
