/* echo reads standard input fully and writes it to standard output. It is
 * the native function of the benchmark: the process baseline, Spear's
 * process runtime and the docker image all run this same binary. */
#include <stdlib.h>
#include <unistd.h>

int main(void) {
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (buf == NULL) return 1;
	for (;;) {
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (buf == NULL) return 1;
		}
		ssize_t n = read(0, buf + len, cap - len);
		if (n < 0) return 1;
		if (n == 0) break;
		len += (size_t)n;
	}
	for (size_t off = 0; off < len;) {
		ssize_t w = write(1, buf + off, len - off);
		if (w <= 0) return 1;
		off += (size_t)w;
	}
	return 0;
}
