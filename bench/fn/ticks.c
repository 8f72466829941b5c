/* ticks reads "COUNT INTERVAL_US" from standard input and writes COUNT
 * lines, one write each, INTERVAL_US microseconds apart: the streaming
 * function of the benchmark. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void) {
	char in[64] = {0};
	ssize_t n = read(0, in, sizeof in - 1);
	if (n < 0) return 1;
	long count = 100, us = 1000;
	sscanf(in, "%ld %ld", &count, &us);
	char line[64];
	for (long i = 0; i < count; i++) {
		int l = snprintf(line, sizeof line, "tick %ld\n", i);
		if (write(1, line, (size_t)l) != l) return 1;
		if (us > 0) {
			struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}
