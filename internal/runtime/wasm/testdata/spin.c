// Spin: a CPU-bound loop that never ends; the volatile counter keeps the
// compiler from removing it.
int main(void) {
	volatile unsigned long n = 0;
	for (;;) n++;
}
