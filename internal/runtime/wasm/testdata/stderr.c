// Stderr: writes each line of standard input to standard error, then "ok"
// to standard output.
#include "fixture.h"

int main(void) {
	char line[4096];
	size_t len = 0;
	char c;
	ssize_t n;
	while ((n = read(0, &c, 1)) == 1) {
		line[len++] = c;
		if (c == '\n' || len == sizeof line) {
			put_n(2, line, len);
			len = 0;
		}
	}
	if (len > 0) put_n(2, line, len);
	return put(1, "ok") == 0 ? 0 : 1;
}
