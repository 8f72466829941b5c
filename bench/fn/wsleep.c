/* wsleep sleeps until it is cancelled: the WASI build of the long-running
 * function (wsleep.wasm is committed; see Makefile). */
#include <unistd.h>

int main(void) {
	for (;;) sleep(3600);
}
