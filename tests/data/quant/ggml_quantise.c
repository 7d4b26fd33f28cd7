// Made the bytes in TYPE_ggml.txt (q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k): ggml of llama.cpp v0.5.0 as
// ../shared/anchors/llamacpp/build.sh builds it (into DIR);
// gcc -O2 ggml_quantise.c -LDIR/bin -lggml-base -Wl,-rpath,DIR/bin && for t in q8_0 q4_0 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k; do ./a.out $t > ${t}_ggml.txt; done
// Quantises deterministic rows with ggml's quantize_row_<type>_ref (what llama-quantize calls without an importance
// matrix) and prints each row's bytes as hex, one row a line.
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
void quantize_row_q8_0_ref(const float * x, void * y, int64_t k);
void quantize_row_q4_0_ref(const float * x, void * y, int64_t k);
void quantize_row_q5_0_ref(const float * x, void * y, int64_t k);
void quantize_row_q5_1_ref(const float * x, void * y, int64_t k);
void quantize_row_q2_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q3_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q4_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q5_K_ref(const float * x, void * y, int64_t k);
void quantize_row_q6_K_ref(const float * x, void * y, int64_t k);
static uint32_t state = 12345;
static float next(void) { state = state * 1664525u + 1013904223u; return (float)(int32_t)(state >> 8) / 16777216.0f - 0.5f; }
int main(int argc, char ** argv) {
    enum { ROWS = 11, COLS = 512 };
    const char * type = argc > 1 ? argv[1] : "q6_k";
    void (*quantize)(const float *, void *, int64_t) = quantize_row_q6_K_ref;
    unsigned bytes = 210; // per 256 weights
    if (strcmp(type, "q8_0") == 0) { quantize = quantize_row_q8_0_ref; bytes = 272; } // 8 blocks of 34
    else if (strcmp(type, "q4_0") == 0) { quantize = quantize_row_q4_0_ref; bytes = 144; } // 8 of 18
    else if (strcmp(type, "q5_0") == 0) { quantize = quantize_row_q5_0_ref; bytes = 176; } // 8 of 22
    else if (strcmp(type, "q5_1") == 0) { quantize = quantize_row_q5_1_ref; bytes = 192; } // 8 of 24
    else if (strcmp(type, "q2_k") == 0) { quantize = quantize_row_q2_K_ref; bytes = 84; }
    else if (strcmp(type, "q3_k") == 0) { quantize = quantize_row_q3_K_ref; bytes = 110; }
    else if (strcmp(type, "q4_k") == 0) { quantize = quantize_row_q4_K_ref; bytes = 144; }
    else if (strcmp(type, "q5_k") == 0) { quantize = quantize_row_q5_K_ref; bytes = 176; }
    else if (strcmp(type, "q6_k") != 0) { fprintf(stderr, "q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k or q6_k\n"); return 2; }
    static float x[COLS];
    static unsigned char y[COLS / 256 * 272];
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
            if (r == 8 && i / 32 == 3) v *= 1e-6f;        // the same for sub-blocks of 32
            if (r == 9 && i / 32 == 5) v = fabsf(v) + 1;  // a sub-block with no negative weight
            if (r == 10) v = i % 32 == 0 ? 127.0f : (float)((int)(v * 512) % 254) / 2; // halves on a scale of 1: ties
            x[i] = v;
        }
        quantize(x, y, COLS);
        for (unsigned i = 0; i < COLS / 256 * bytes; i++) printf("%02x", y[i]);
        printf("\n");
    }
    return 0;
}
