// Exit: writes "boom" to standard error and exits 3.
#include <stdlib.h>
#include "fixture.h"

int main(void) {
	put(2, "boom\n");
	exit(3);
}
