/*
 * gaicount: repeat a libc name lookup and count how often it fails.
 *
 *   gaicount [-e EXPECT] [-t SECONDS] gai NAME COUNT
 *       getaddrinfo(NAME) with AF_UNSPEC (A + AAAA, as most programs ask).
 *   gaicount [-e EXPECT] [-t SECONDS] ptr ADDRESS COUNT
 *       getnameinfo(ADDRESS, NI_NAMEREQD): a reverse (PTR) lookup.
 *
 * A lookup counts as ok when the call succeeds and, if -e is given, EXPECT is
 * among the results (an address for gai, the host name for ptr). It prints one
 * summary line:
 *
 *   libc=musl mode=gai name=x.consul n=500 ok=83 fail=417 ms=152 EAI_NONAME=417
 *
 * followed by the first few distinct failure details on stderr. Exit status:
 * 0 when nothing failed, 1 when some lookups failed, 2 on usage errors.
 * -t caps the wall-clock time (default 60 s); lookups not attempted by then
 * count as failures ("deadline").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef __GLIBC__
#define LIBC_NAME "glibc"
#else
#define LIBC_NAME "musl"
#endif

#define MAX_CODES 16

struct tally {
	int code;
	long count;
};

static struct tally codes[MAX_CODES];
static int ncodes;
static long wrong_answer;

static const char *eai_name(int code)
{
	switch (code) {
	case EAI_NONAME: return "EAI_NONAME";
	case EAI_AGAIN: return "EAI_AGAIN";
	case EAI_FAIL: return "EAI_FAIL";
	case EAI_FAMILY: return "EAI_FAMILY";
	case EAI_MEMORY: return "EAI_MEMORY";
	case EAI_SERVICE: return "EAI_SERVICE";
	case EAI_SYSTEM: return "EAI_SYSTEM";
#ifdef EAI_NODATA
	case EAI_NODATA: return "EAI_NODATA";
#endif
	default: return "EAI_OTHER";
	}
}

static void count_code(int code)
{
	for (int i = 0; i < ncodes; i++) {
		if (codes[i].code == code) {
			codes[i].count++;
			return;
		}
	}
	if (ncodes < MAX_CODES) {
		codes[ncodes].code = code;
		codes[ncodes].count = 1;
		ncodes++;
	}
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* Returns 0 on success, an EAI_* code, or 1 for "answered but not EXPECT". */
static int lookup_gai(const char *name, const char *expect, char *seen, size_t seenlen)
{
	struct addrinfo hints, *res, *ai;
	int rc, found = 0;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(name, NULL, &hints, &res);
	if (rc != 0)
		return rc;
	seen[0] = '\0';
	for (ai = res; ai; ai = ai->ai_next) {
		char buf[INET6_ADDRSTRLEN] = "";
		const void *p = NULL;
		if (ai->ai_family == AF_INET)
			p = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			p = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		if (p && inet_ntop(ai->ai_family, p, buf, sizeof buf)) {
			if (!seen[0])
				snprintf(seen, seenlen, "%s", buf);
			if (expect && strcmp(buf, expect) == 0)
				found = 1;
		}
	}
	freeaddrinfo(res);
	return (!expect || found) ? 0 : 1;
}

static int lookup_ptr(const struct sockaddr *sa, socklen_t salen, const char *expect,
		      char *seen, size_t seenlen)
{
	char host[NI_MAXHOST];
	int rc = getnameinfo(sa, salen, host, sizeof host, NULL, 0, NI_NAMEREQD);
	if (rc != 0)
		return rc;
	snprintf(seen, seenlen, "%s", host);
	if (!expect)
		return 0;
	/* Accept the name with or without a trailing dot. */
	size_t n = strlen(expect);
	if (n && expect[n - 1] == '.')
		n--;
	if (strncasecmp(host, expect, n) == 0 && (host[n] == '\0' || (host[n] == '.' && host[n + 1] == '\0')))
		return 0;
	return 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: gaicount [-e EXPECT] [-t SECONDS] gai|ptr NAME COUNT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *expect = NULL;
	double max_seconds = 60;
	int opt;

	while ((opt = getopt(argc, argv, "e:t:")) != -1) {
		switch (opt) {
		case 'e': expect = optarg; break;
		case 't': max_seconds = atof(optarg); break;
		default: usage();
		}
	}
	if (argc - optind != 3)
		usage();
	const char *mode = argv[optind];
	const char *name = argv[optind + 1];
	long count = strtol(argv[optind + 2], NULL, 10);
	int ptr = strcmp(mode, "ptr") == 0;
	if ((!ptr && strcmp(mode, "gai") != 0) || count <= 0 || max_seconds <= 0)
		usage();

	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	memset(&ss, 0, sizeof ss);
	if (ptr) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET, name, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			sslen = sizeof *s4;
		} else if (inet_pton(AF_INET6, name, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			sslen = sizeof *s6;
		} else {
			fprintf(stderr, "gaicount: ptr needs an IP address, not %s\n", name);
			return 2;
		}
	}

	long ok = 0, fail = 0, deadline = 0;
	int details = 0;
	double start = now_ms();
	for (long i = 0; i < count; i++) {
		char seen[NI_MAXHOST] = "";
		if (now_ms() - start > max_seconds * 1000.0) {
			deadline = count - i;
			fail += deadline;
			break;
		}
		int rc = ptr ? lookup_ptr((struct sockaddr *)&ss, sslen, expect, seen, sizeof seen)
			     : lookup_gai(name, expect, seen, sizeof seen);
		if (rc == 0) {
			ok++;
			continue;
		}
		fail++;
		if (rc == 1)
			wrong_answer++;
		else
			count_code(rc);
		if (details < 3) {
			details++;
			if (rc == 1)
				fprintf(stderr, "gaicount: lookup %ld: got %s, expected %s\n", i + 1, seen, expect);
			else
				fprintf(stderr, "gaicount: lookup %ld: %s (%s)\n", i + 1, eai_name(rc), gai_strerror(rc));
		}
	}
	double elapsed = now_ms() - start;

	printf("libc=%s mode=%s name=%s n=%ld ok=%ld fail=%ld ms=%.0f", LIBC_NAME, mode, name, count, ok,
	       fail, elapsed);
	for (int i = 0; i < ncodes; i++)
		printf(" %s=%ld", eai_name(codes[i].code), codes[i].count);
	if (wrong_answer)
		printf(" wrong_answer=%ld", wrong_answer);
	if (deadline)
		printf(" deadline=%ld", deadline);
	printf("\n");
	return fail ? 1 : 0;
}
