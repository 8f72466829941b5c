// Ticks: writes "tick 0\n" .. "tick 4\n" 100 ms apart, one write each.
#include "fixture.h"

int main(void) {
	char line[] = "tick 0\n";
	for (int i = 0; i < 5; i++) {
		if (i > 0) usleep(100 * 1000);
		line[5] = (char)('0' + i);
		if (put(1, line) != 0) return 1;
	}
	return 0;
}
