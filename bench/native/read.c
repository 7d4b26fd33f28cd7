/* STREAM-style read bandwidth in C, the yardstick for `dss bench --memory`: sum 1 GiB of floats with OpenMP threads
 * (static schedule, each thread a contiguous share) and eight independent 256-bit accumulators, best of 5 passes.
 * Build: gcc -O2 -mavx2 -fopenmp read.c -o read        Run: ./read THREADS */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const size_t bytes = 1ULL << 30;
    const int passes = 5;
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    omp_set_num_threads(threads);
    float *a = aligned_alloc(64, bytes);
    if (!a) { fprintf(stderr, "cannot allocate 1 GiB\n"); return 1; }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes / 4; i++) a[i] = 1.0f;
    double best = 0, sink = 0;
    for (int p = 0; p < passes; p++) {
        double t0 = omp_get_wtime();
        float total = 0;
#pragma omp parallel reduction(+ : total)
        {
            __m256 s[8];
            for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
#pragma omp for schedule(static)
            for (size_t i = 0; i < bytes / 4; i += 64)
                for (int k = 0; k < 8; k++) s[k] = _mm256_add_ps(s[k], _mm256_load_ps(a + i + 8 * k));
            __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])),
                                       _mm256_add_ps(_mm256_add_ps(s[4], s[5]), _mm256_add_ps(s[6], s[7])));
            float t[8];
            _mm256_storeu_ps(t, sum);
            for (int k = 0; k < 8; k++) total += t[k];
        }
        double dt = omp_get_wtime() - t0;
        sink += total;
        if (bytes / dt > best) best = bytes / dt;
    }
    printf("{\"threads\": %d, \"read_gb_s\": %.2f, \"sum\": %.0f}\n", threads, best / 1e9, sink);
    free(a);
    return 0;
}
