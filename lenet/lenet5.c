/* LeNet-5's forward pass on the CPU, for lenet/native.py (which compiles this file and packs the weights).

   The network is small enough that general convolution libraries spend most of their time on
   overheads and on 1- and 6-channel convolutions that fill few vector lanes. Here every
   multiply-add fills a whole vector:
   - many images: LANES images side by side in each vector (the batch is the innermost axis), so
     each weight is one broadcast and every layer is plain vector multiply-adds;
   - one image: conv1 runs along the output columns (even and odd ones apart, so the 2x2 average
     pooling is a plain vector add), conv2 and the dense layers along their output channels.
   ReLU, pooling and the softmax are fused in. The vector type is GCC's and Clang's vector
   extension, as wide as the machine's registers (a wider one would be split and spilled: ten times
   slower on AVX2), and the accumulators of each loop fit in the register file. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define LANES 16
#define GROUP 16 /* conv2 output channels accumulated at once: 32 registers */
#elif defined(__AVX__)
#define LANES 8
#define GROUP 8 /* 16 registers */
#else
#define LANES 4 /* SSE2, NEON */
#define GROUP 8
#endif

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int ivec __attribute__((vector_size(LANES * sizeof(int))));

/* The layout lenet/native.py packs (weight_arrays, derived from lenet/models.py's LeNet5;
   tests/test_native.py checks this struct against it): input normalisation folded into conv1, dense
   outputs padded with zeros to a multiple of 16 (whole vectors at every width). */
typedef struct {
    float w1[25][6], b1[6];       /* conv1 [tap][out] */
    float w2[25][6][16], b2[16];  /* conv2 [tap][in][out] */
    float w3[256][128], b3[128];  /* dense 256 -> 120, inputs in (row, column, channel) order */
    float w4[120][96], b4[96];    /* dense 120 -> 84 */
    float w5[84][16], b5[16];     /* dense 84 -> 10 */
} Weights;

long lenet5_weights_floats(void) { return sizeof(Weights) / sizeof(float); }
int lenet5_lanes(void) { return LANES; }

static inline vec broadcast(float value) { return (vec){0} + value; }
static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline vec relu(vec a) { return (vec)((ivec)a & (a > (vec){0})); }

/* Ten logits, `stride` floats apart -> ten probabilities. */
static void softmax10(const float *logits, int stride, float *probs) {
    float top = logits[0], sum = 0;
    for (int k = 1; k < 10; k++) top = logits[k * stride] > top ? logits[k * stride] : top;
    for (int k = 0; k < 10; k++) sum += probs[k] = expf(logits[k * stride] - top);
    for (int k = 0; k < 10; k++) probs[k] /= sum;
}

/* LANES images: x[784] (pixel-major, image in the lane) -> out[10] logits. */
static void forward_group(const Weights *W, const vec *x, vec *p1, vec *p2, vec *out) {
    for (int pi = 0; pi < 12; pi++)  /* conv1 + ReLU + pool -> p1[12][12][6] */
        for (int pj = 0; pj < 12; pj++) {
            vec pool[6] = {0};
            for (int d = 0; d < 4; d++) {
                int i = 2 * pi + (d >> 1), j = 2 * pj + (d & 1);
                vec acc[6];
                for (int c = 0; c < 6; c++) acc[c] = broadcast(W->b1[c]);
                for (int ki = 0; ki < 5; ki++)
                    for (int kj = 0; kj < 5; kj++) {
                        vec v = x[(i + ki) * 28 + j + kj];
                        for (int c = 0; c < 6; c++) acc[c] += W->w1[ki * 5 + kj][c] * v;
                    }
                for (int c = 0; c < 6; c++) pool[c] += relu(acc[c]);
            }
            for (int c = 0; c < 6; c++) p1[(pi * 12 + pj) * 6 + c] = pool[c] * 0.25f;
        }
    for (int pi = 0; pi < 4; pi++)  /* conv2 + ReLU + pool -> p2[4][4][16] */
        for (int pj = 0; pj < 4; pj++) {
            vec *pooled = p2 + (pi * 4 + pj) * 16;
            for (int c = 0; c < 16; c++) pooled[c] = (vec){0};
            for (int d = 0; d < 4; d++) {
                int i = 2 * pi + (d >> 1), j = 2 * pj + (d & 1);
                for (int c0 = 0; c0 < 16; c0 += GROUP) {
                    vec acc[GROUP];
                    for (int c = 0; c < GROUP; c++) acc[c] = broadcast(W->b2[c0 + c]);
                    for (int ki = 0; ki < 5; ki++)
                        for (int kj = 0; kj < 5; kj++)
                            for (int ci = 0; ci < 6; ci++) {
                                vec v = p1[((i + ki) * 12 + j + kj) * 6 + ci];
                                const float *w = W->w2[ki * 5 + kj][ci] + c0;
                                for (int c = 0; c < GROUP; c++) acc[c] += w[c] * v;
                            }
                    for (int c = 0; c < GROUP; c++) pooled[c0 + c] += relu(acc[c]) * 0.25f;
                }
            }
        }
    vec h1[120], h2[84];
    for (int o0 = 0; o0 < 120; o0 += 8) {  /* outputs in groups, so each input is loaded once a group */
        vec acc[8];
        for (int o = 0; o < 8; o++) acc[o] = broadcast(W->b3[o0 + o]);
        for (int k = 0; k < 256; k++)
            for (int o = 0; o < 8; o++) acc[o] += W->w3[k][o0 + o] * p2[k];
        for (int o = 0; o < 8; o++) h1[o0 + o] = relu(acc[o]);
    }
    for (int o0 = 0; o0 < 84; o0 += 12) {
        vec acc[12];
        for (int o = 0; o < 12; o++) acc[o] = broadcast(W->b4[o0 + o]);
        for (int k = 0; k < 120; k++)
            for (int o = 0; o < 12; o++) acc[o] += W->w4[k][o0 + o] * h1[k];
        for (int o = 0; o < 12; o++) h2[o0 + o] = relu(acc[o]);
    }
    for (int o = 0; o < 10; o++) out[o] = broadcast(W->b5[o]);
    for (int k = 0; k < 84; k++)
        for (int o = 0; o < 10; o++) out[o] += W->w5[k][o] * h2[k];
}

/* images: n x 784 floats (0..1) -> probabilities: n x 10, on `threads` threads (OpenMP, when
   compiled with it). Returns 0, or -1 when out of memory. */
int lenet5_batch(const Weights *W, const float *images, float *probs, long n, int threads) {
    long groups = (n + LANES - 1) / LANES;
    int failed = 0;
    #pragma omp parallel num_threads(threads) if (groups > 1)
    {
        /* On the heap: up to 120 KB, more than some threads' stacks. */
        size_t bytes = sizeof(vec) * (784 + 864 + 256 + 10);
        vec *x = aligned_alloc(64, (bytes + 63) / 64 * 64);  /* a whole number of alignments, as C11 asks */
        vec *p1 = x + 784, *p2 = p1 + 864, *out = p2 + 256;
        #pragma omp for schedule(static)
        for (long g = 0; g < groups; g++) {
            if (!x) {
                #pragma omp atomic write
                failed = 1;
                continue;
            }
            long first = g * LANES, count = n - first < LANES ? n - first : LANES;
            float *lanes = (float *)x;
            if (count < LANES) memset(x, 0, sizeof(vec) * 784);  /* blank lanes: never read, but finite */
            for (long b = 0; b < count; b++)
                for (int k = 0; k < 784; k++) lanes[k * LANES + b] = images[(size_t)(first + b) * 784 + k];
            forward_group(W, x, p1, p2, out);
            for (long b = 0; b < count; b++) softmax10((const float *)out + b, LANES, probs + (size_t)(first + b) * 10);
        }
        free(x);
    }
    return failed ? -1 : 0;
}

/* out[0..width) = bias + in . w (w: n_in rows of `width`), ReLU'd if asked; width a multiple of 16.
   Eight vectors at a time: their accumulators stay in registers. */
static inline void dense(const float *w, const float *bias, const float *in, int n_in, int width, int apply_relu, float *out) {
    for (int o0 = 0; o0 < width; o0 += 8 * LANES) {
        int vecs = (width - o0) / LANES < 8 ? (width - o0) / LANES : 8;
        vec acc[8];
        for (int v = 0; v < vecs; v++) acc[v] = load(bias + o0 + v * LANES);
        for (int k = 0; k < n_in; k++)
            for (int v = 0; v < vecs; v++) acc[v] += load(w + k * width + o0 + v * LANES) * in[k];
        for (int v = 0; v < vecs; v++) store(out + o0 + v * LANES, apply_relu ? relu(acc[v]) : acc[v]);
    }
}

/* One image: 784 floats (0..1) -> 10 probabilities, on the calling thread. */
void lenet5_single(const Weights *W, const float *image, float *probs) {
    /* Even and odd input columns apart, zero-padded: conv1's even and odd output columns then read
       contiguous vectors (up to column 12 rounded up to whole vectors, plus 2 for the taps). */
    float even_cols[28][20] = {{0}}, odd_cols[28][20] = {{0}};
    for (int r = 0; r < 28; r++)
        for (int q = 0; q < 14; q++) {
            even_cols[r][q] = image[r * 28 + 2 * q];
            odd_cols[r][q] = image[r * 28 + 2 * q + 1];
        }
    float p1[12][6][16];  /* [row][channel][column], columns 0..11 */
    for (int pi = 0; pi < 12; pi++)
        for (int q0 = 0; q0 < 12; q0 += LANES) {  /* output columns 2q and 2q + 1, q from q0 */
            vec pool[6] = {0};
            for (int di = 0; di < 2; di++) {
                vec even[6], odd[6];
                for (int c = 0; c < 6; c++) even[c] = odd[c] = broadcast(W->b1[c]);
                for (int ki = 0; ki < 5; ki++) {
                    const float *e = even_cols[2 * pi + di + ki] + q0, *o = odd_cols[2 * pi + di + ki] + q0;
                    for (int kj = 0; kj < 5; kj++) {  /* input column 2q + kj, and 2q + 1 + kj */
                        vec for_even = kj & 1 ? load(o + kj / 2) : load(e + kj / 2);
                        vec for_odd = kj & 1 ? load(e + (kj + 1) / 2) : load(o + kj / 2);
                        const float *w = W->w1[ki * 5 + kj];
                        for (int c = 0; c < 6; c++) {
                            even[c] += w[c] * for_even;
                            odd[c] += w[c] * for_odd;
                        }
                    }
                }
                for (int c = 0; c < 6; c++) pool[c] += relu(even[c]) + relu(odd[c]);
            }
            for (int c = 0; c < 6; c++) store(p1[pi][c] + q0, pool[c] * 0.25f);
        }
    float p2[256];  /* (row, column, channel) */
    for (int pi = 0; pi < 4; pi++)
        for (int pj = 0; pj < 4; pj++)
            for (int c0 = 0; c0 < 16; c0 += LANES) {
                vec acc[4];  /* the four positions one pooled output averages */
                for (int d = 0; d < 4; d++) acc[d] = load(W->b2 + c0);
                for (int ki = 0; ki < 5; ki++)
                    for (int kj = 0; kj < 5; kj++)
                        for (int ci = 0; ci < 6; ci++) {
                            vec w = load(W->w2[ki * 5 + kj][ci] + c0);
                            for (int d = 0; d < 4; d++) acc[d] += w * p1[2 * pi + (d >> 1) + ki][ci][2 * pj + (d & 1) + kj];
                        }
                store(p2 + (pi * 4 + pj) * 16 + c0, (relu(acc[0]) + relu(acc[1]) + relu(acc[2]) + relu(acc[3])) * 0.25f);
            }
    float h1[128], h2[96], logits[16];
    dense(&W->w3[0][0], W->b3, p2, 256, 128, 1, h1);
    dense(&W->w4[0][0], W->b4, h1, 120, 96, 1, h2);
    dense(&W->w5[0][0], W->b5, h2, 84, 16, 0, logits);
    softmax10(logits, 1, probs);
}
