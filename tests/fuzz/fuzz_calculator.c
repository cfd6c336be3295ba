/*
 * fuzz_calculator.c: libFuzzer target over the calculator tool
 * (src/tool/calculator.c), which evaluates text the model wrote.
 *
 * Beyond "no crash, no leak, no UB" (ASan/UBSan) and libFuzzer's time
 * limit: a result is a NUL-terminated string of the reported length that
 * looks like Python's str() of an int, float, str, bytes, () or Ellipsis:
 * printable ASCII only, never longer than NC_CALC_RESULT_MAX.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tool/calculator.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char out[NC_CALC_RESULT_MAX];
    int n = nc_calculator((const char *)data, size, out, sizeof out);
    if (n < 0) return 0;
    REQUIRE((size_t)n < sizeof out && out[n] == 0 && strlen(out) == (size_t)n);
    for (int i = 0; i < n; i++) REQUIRE(out[i] >= 0x20 && out[i] < 0x7f);
    return 0;
}
