// Made the bytes in q6_k_ggml.txt: ggml of llama.cpp v0.5.0 as ../shared/anchors/llamacpp/build.sh builds it (into
// DIR); gcc -O2 q6_k_ggml.c -LDIR/bin -lggml-base -Wl,-rpath,DIR/bin && ./a.out > q6_k_ggml.txt
// Quantises deterministic rows with ggml's quantize_row_q6_K_ref and prints each row's bytes as hex, one row a line.
#include <stdio.h>
#include <stdint.h>
#include <math.h>
void quantize_row_q6_K_ref(const float * x, void * y, int64_t k);
static uint32_t state = 12345;
static float next(void) { state = state * 1664525u + 1013904223u; return (float)(int32_t)(state >> 8) / 16777216.0f - 0.5f; }
int main(void) {
    enum { ROWS = 8, COLS = 512 };
    static float x[COLS];
    static unsigned char y[COLS / 256 * 210];
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < COLS; i++) {
            float v = next();
            if (r == 1) v *= 1e-3f;                       // small weights
            if (r == 2 && i % 37 == 0) v *= 40.0f;        // outliers
            if (r == 3 && i / 16 % 3 == 0) v = 0.0f;      // all-zero sub-blocks
            if (r == 4 && i < 256) v = 0.0f;              // an all-zero block
            if (r == 5) v = v > 0 ? v * v : -v * v * 3;   // skewed
            if (r == 6 && i % 16 == 5) v = -2.0f;         // a repeated extreme
            if (r == 7 && i / 16 == 2) v *= 1e-6f;        // a sub-block whose scale rounds to zero
            x[i] = v;
        }
        quantize_row_q6_K_ref(x, y, COLS);
        for (unsigned i = 0; i < sizeof y; i++) printf("%02x", y[i]);
        printf("\n");
    }
    return 0;
}
