// Echo: copies standard input to standard output.
#include "fixture.h"

int main(void) {
	static char buf[65536];
	ssize_t n;
	while ((n = read(0, buf, sizeof buf)) > 0) {
		if (put_n(1, buf, (size_t)n) != 0) return 1;
	}
	return n < 0 ? 1 : 0;
}
