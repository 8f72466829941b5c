// Env: prints $SPEAR_TEST_VAR.
#include <stdlib.h>
#include "fixture.h"

int main(void) {
	const char *v = getenv("SPEAR_TEST_VAR");
	if (v == NULL) v = "";
	put(1, v);
	return 0;
}
