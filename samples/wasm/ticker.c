// ticker writes "tick N\n" 200 ms apart, 5 times or $TICKS times. Each line
// is one write(2), so that it streams.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void tick(int i) {
	char line[32] = "tick ";
	char digits[12];
	int n = 0;
	do {
		digits[n++] = (char)('0' + i % 10);
		i /= 10;
	} while (i > 0);
	size_t len = strlen(line);
	while (n > 0) line[len++] = digits[--n];
	line[len++] = '\n';
	write(1, line, len);
}

int main(void) {
	int n = 5;
	const char *s = getenv("TICKS");
	if (s != NULL && *s != '\0') n = atoi(s);
	for (int i = 0; i < n; i++) {
		if (i > 0) usleep(200 * 1000);
		tick(i);
	}
	return 0;
}
