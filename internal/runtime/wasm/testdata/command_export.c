// A command module (_start runs main) that also exports "hello", which the
// runtime calls without running main.
#include "fixture.h"

__attribute__((export_name("hello"))) void hello(void) { put(1, "hello from export\n"); }

int main(void) {
	put(1, "main\n");
	return 0;
}
