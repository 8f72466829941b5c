/* sleep blocks until it is killed: the long-running function of the cancel
 * and queued-memory benchmarks. */
#include <unistd.h>

int main(void) {
	for (;;) pause();
}
