/*
 * fuzz_libfuzzer.c: the shadow-model fuzzer's operations (fuzz_core.h) as a
 * libFuzzer target (clang -fsanitize=fuzzer; meson builds it with clang as
 * tests/fuzz_libfuzzer, suite 'libfuzzer'). One thread: the input's bytes
 * choose the operations, sizes and alignments; at the end of each input
 * every block is freed and nothing may be left in use. The seeded driver
 * (fuzz.c) is what CI runs; this one lets coverage guide the search:
 *
 *   ./build/clang/tests/fuzz_libfuzzer -max_total_time=600 corpus/
 */
#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char replay[] = "replay: run the target on the crashing input";
    fz_replay = replay;
    fz_thread_t t = {.data = data, .len = size};
    while (!t.exhausted && t.ops < 4096) fz_step(&t);
    fz_drain(&t);
    fz_check_empty(&t);
    return 0;
}
