// A reactor module (built with -mexec-model=reactor: _initialize, no _start)
// exporting functions the runtime calls by name.
#include <stdlib.h>
#include "fixture.h"

static int initialized;

__attribute__((constructor)) static void init(void) { initialized = 1; }

// shout copies standard input to standard output in upper case, then "!\n".
// It fails (returns 1) when _initialize was not run first.
__attribute__((export_name("shout"))) int shout(void) {
	if (!initialized) return 1;
	char buf[4096];
	ssize_t n;
	while ((n = read(0, buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 'a' - 'A';
		}
		if (put_n(1, buf, (size_t)n) != 0) return 1;
	}
	return put(1, "!\n") == 0 ? 0 : 1;
}

// trap executes an unreachable instruction.
__attribute__((export_name("trap"))) void trap(void) {
	put(2, "about to trap\n");
	__builtin_trap();
}

// sink keeps the allocations alive (and the compiler from removing them).
static char *volatile sink;

// grow allocates and touches 1 MiB blocks, $GROW_MIB of them (default 4),
// prints "grew N\n", and returns 0 when all of them succeeded, 2 when an
// allocation failed.
__attribute__((export_name("grow"))) int grow(void) {
	int want = 4;
	const char *s = getenv("GROW_MIB");
	if (s != NULL && *s != '\0') want = atoi(s);
	int got = 0;
	for (; got < want; got++) {
		char *p = malloc(1 << 20);
		if (p == NULL) break;
		memset(p, 1, 1 << 20);
		sink = p;
	}
	char line[] = "grew 000\n";
	line[5] = (char)('0' + got / 100 % 10);
	line[6] = (char)('0' + got / 10 % 10);
	line[7] = (char)('0' + got % 10);
	put(1, line);
	return got == want ? 0 : 2;
}
