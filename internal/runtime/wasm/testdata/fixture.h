// Small unbuffered output helpers shared by the fixtures (stdio would add
// ~30 KiB to each module).
#ifndef SPEAR_FIXTURE_H
#define SPEAR_FIXTURE_H

#include <string.h>
#include <unistd.h>

static inline int put_n(int fd, const char *s, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w <= 0) return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static inline int put(int fd, const char *s) { return put_n(fd, s, strlen(s)); }

#endif
