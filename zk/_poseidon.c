/* Native Poseidon over the BN254 scalar field: the same function as zk/poseidon.py (ZoKrates' stdlib, circomlib's
 * parameters), in 4x64-bit Montgomery arithmetic. Built at install time as the optional extension zk._poseidon
 * (pyproject.toml); zk/poseidon.py falls back to pure Python when it is missing.
 *
 * Python hands the (sparse-form) constants over with load(); every field element crosses the boundary as 32
 * little-endian bytes, canonical (< p). The batch functions release the GIL, so threads hash in parallel.
 *
 * Two permutations, one body (DEFINE_PERMUTE): the portable C form (u128 products, every element canonical) and,
 * on x86-64 CPUs with BMI2 and ADX (checked at import; `impl()` says which runs, `use()` switches for tests), the
 * same arithmetic in inline assembly with lazily reduced elements and one reduction per matrix row, ~2.2x
 * faster. Compiled with the baseline flags (-O3, no -march), so one build runs on any x86-64 or other 64-bit CPU. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t u64;
typedef unsigned __int128 u128;
typedef u64 fe[4];

static const u64 P[4] = {0x43e1f593f0000001ULL, 0x2833e84879b97091ULL, 0xb85045b68181585dULL, 0x30644e72e131a029ULL};
static const u64 INV = 0xc2e1f593efffffffULL; /* -p^-1 mod 2^64 */
static const u64 R2[4] = {0x1bb8e645ae216da7ULL, 0x53fe3ab1e35c59e3ULL, 0x8c49833d53bb8085ULL, 0x0216d0b17f4e44a5ULL};
static const u64 ONE[4] = {1, 0, 0, 0};

#define MAX_T 7
#define FULL 8
#define MAX_PARTIAL 64

static inline int geq_p(const u64 *a) {
    for (int i = 3; i >= 0; i--) {
        if (a[i] != P[i]) return a[i] > P[i];
    }
    return 1;
}

static inline void sub_p(u64 *a) {
    u128 borrow = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)a[i] - P[i] - borrow;
        a[i] = (u64)d;
        borrow = (d >> 64) & 1;
    }
}

/* Montgomery product a * b / 2^256 mod p (CIOS; p's top word leaves room, so no extra carry word): below 2p
 * (mul_lazy), canonical (mul). */
static inline void mul_lazy(u64 *r, const u64 *a, const u64 *b) {
    u64 t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4;
    for (int i = 0; i < 4; i++) {
        u128 c = (u128)a[0] * b[i] + t0;
        t0 = (u64)c;
        c = (c >> 64) + (u128)a[1] * b[i] + t1;
        t1 = (u64)c;
        c = (c >> 64) + (u128)a[2] * b[i] + t2;
        t2 = (u64)c;
        c = (c >> 64) + (u128)a[3] * b[i] + t3;
        t3 = (u64)c;
        t4 = (u64)(c >> 64);
        u64 m = t0 * INV;
        c = (u128)m * P[0] + t0;
        c = (c >> 64) + (u128)m * P[1] + t1;
        t0 = (u64)c;
        c = (c >> 64) + (u128)m * P[2] + t2;
        t1 = (u64)c;
        c = (c >> 64) + (u128)m * P[3] + t3;
        t2 = (u64)c;
        t3 = t4 + (u64)(c >> 64);
    }
    r[0] = t0, r[1] = t1, r[2] = t2, r[3] = t3;
}

static inline void mul(u64 *r, const u64 *a, const u64 *b) {
    mul_lazy(r, a, b);
    if (geq_p(r)) sub_p(r);
}

static inline void add(u64 *r, const u64 *a, const u64 *b) {
    u128 c = 0;
    for (int i = 0; i < 4; i++) {
        c = (c >> 64) + a[i] + b[i];
        r[i] = (u64)c;
    }
    if (geq_p(r)) sub_p(r);
}

static inline void pow5(u64 *x) {
    fe x2, x4;
    mul(x2, x, x);
    mul(x4, x2, x2);
    mul(x, x4, x);
}

/* Full 512-bit product a * b (schoolbook), added into a 9-limb accumulator. */
static inline void mac_wide(u64 *acc, const u64 *a, const u64 *b) {
    u64 w[8] = {0};
    for (int i = 0; i < 4; i++) {
        u128 c = 0;
        for (int j = 0; j < 4; j++) {
            c = (c >> 64) + (u128)a[i] * b[j] + w[i + j];
            w[i + j] = (u64)c;
        }
        w[i + 4] = (u64)(c >> 64);
    }
    u128 c = 0;
    for (int i = 0; i < 8; i++) {
        c = (c >> 64) + acc[i] + w[i];
        acc[i] = (u64)c;
    }
    acc[8] += (u64)(c >> 64);
}

/* Montgomery reduction of a sum of at most 8 products of canonical elements (T < 8 p^2 < p * 2^256 * 2.6):
 * T / 2^256 mod p, canonical. */
static inline void redc_sum(u64 *r, u64 *t) {
    for (int i = 0; i < 4; i++) {
        u64 m = t[i] * INV;
        u128 c = 0;
        for (int j = 0; j < 4; j++) {
            c = (c >> 64) + (u128)m * P[j] + t[i + j];
            t[i + j] = (u64)c;
        }
        for (int k = i + 4; k < 9 && (c >> 64); k++) {
            c = (c >> 64) + t[k];
            t[k] = (u64)c;
        }
    }
    r[0] = t[4], r[1] = t[5], r[2] = t[6], r[3] = t[7];
    while (geq_p(r)) sub_p(r); /* at most twice: T / 2^256 + p < 2.6 p */
}

/* sum_j m[j] * s[j], one reduction for the whole sum */
static inline void dot(u64 *r, const fe *m, const fe *s, int n) {
    u64 acc[9] = {0};
    for (int j = 0; j < n; j++) mac_wide(acc, m[j], s[j]);
    redc_sum(r, acc);
}

typedef struct {
    int loaded, partial;
    fe c[FULL][MAX_T];        /* full rounds' constants: rounds 0..3, then the last 4 */
    fe mds[MAX_T][MAX_T];
    fe pre[MAX_T][MAX_T];     /* the last first-half full round's matrix, with the partial rounds' factor */
    fe fpc[MAX_T];            /* constant added before the first partial round */
    fe post[MAX_PARTIAL];     /* constant added after each partial round's S-box */
    fe a00[MAX_PARTIAL];
    fe w[MAX_PARTIAL][MAX_T - 1];
    fe v[MAX_PARTIAL][MAX_T - 1];
} Params;

static Params PARAMS[MAX_T + 1];

static void to_mont(u64 *r, const unsigned char *le) {
    fe a;
    memcpy(a, le, 32); /* x86-64 and aarch64 are little-endian */
    mul(r, a, R2);
}

static void from_mont(unsigned char *le, const u64 *a) {
    fe r;
    mul(r, a, ONE);
    memcpy(le, r, 32);
}

static void matvec(fe *s, const fe m[MAX_T][MAX_T], int t) {
    fe out[MAX_T];
    for (int i = 0; i < t; i++) dot(out[i], m[i], s, t);
    memcpy(s, out, sizeof(fe) * t);
}

/* One partial round in sparse form: S-box on element 0, the post constant, then the sparse matrix (a00, w, v). */
static inline void partial_round(fe *s, const Params *p, int r, int t) {
    fe x, tmp;
    u64 acc[9] = {0};
    memcpy(x, s[0], sizeof(fe));
    pow5(x);
    add(x, x, p->post[r]);
    mac_wide(acc, p->a00[r], x);
    for (int i = 1; i < t; i++) {
        mac_wide(acc, p->w[r][i - 1], s[i]);
        mul(tmp, p->v[r][i - 1], x);
        add(s[i], s[i], tmp);
    }
    redc_sum(s[0], acc);
}

static inline void canonical(u64 *x) { (void)x; } /* the portable form keeps every element canonical */

/* Poseidon of t - 1 inputs in Montgomery form (the sparse form of zk/poseidon.py); the result (Montgomery form,
 * canonical) goes to out. One body for both paths: ADD, POW5, MATVEC, DOT and PARTIAL are that path's operations. */
#define DEFINE_PERMUTE(NAME, ADD, POW5, MATVEC, DOT, PARTIAL, CANONICAL)                                        \
    static void NAME(u64 *out, const fe *inputs, int t) {                                                      \
        const Params *p = &PARAMS[t];                                                                          \
        fe s[MAX_T];                                                                                           \
        memset(s[0], 0, sizeof(fe));                                                                           \
        memcpy(s[1], inputs, sizeof(fe) * (t - 1));                                                            \
        int half = FULL / 2;                                                                                   \
        for (int r = 0; r < half; r++) {                                                                       \
            for (int i = 0; i < t; i++) {                                                                      \
                ADD(s[i], s[i], p->c[r][i]);                                                                   \
                POW5(s[i]);                                                                                    \
            }                                                                                                  \
            MATVEC(s, r < half - 1 ? p->mds : p->pre, t);                                                      \
        }                                                                                                      \
        for (int i = 0; i < t; i++) ADD(s[i], s[i], p->fpc[i]);                                                \
        for (int r = 0; r < p->partial; r++) PARTIAL(s, p, r, t);                                              \
        for (int r = half; r < FULL; r++) {                                                                    \
            for (int i = 0; i < t; i++) {                                                                      \
                ADD(s[i], s[i], p->c[r][i]);                                                                   \
                POW5(s[i]);                                                                                    \
            }                                                                                                  \
            if (r < FULL - 1) {                                                                                \
                MATVEC(s, p->mds, t);                                                                          \
            } else {                                                                                           \
                DOT(out, p->mds[0], s, t); /* only the first element is the hash */                            \
            }                                                                                                  \
        }                                                                                                      \
        CANONICAL(out);                                                                                        \
    }

DEFINE_PERMUTE(permute, add, pow5, matvec, dot, partial_round, canonical)

/* The fast path (x86-64 with BMI2 and ADX, checked at import: nearly every x86-64 CPU since 2013-2015): the same
 * Montgomery product in assembly with mulx and two carry chains (adcx/adox), ~3x fewer instructions than what the
 * compiler makes of the u128 form above. Elements stay below 2p between operations (p < 2^254, so a product of
 * two such elements is again below 2p and sums of two fit in 256 bits); results are made canonical at the end.
 * The portable form above is kept for other CPUs and tested against this one (zk._poseidon.use). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <x86intrin.h>
#define HAVE_ADX_PATH 1
static const u64 P2[4] = {0x87c3eb27e0000002ULL, 0x5067d090f372e122ULL, 0x70a08b6d0302b0baULL, 0x60c89ce5c2634053ULL};

/* The assembly, row by row. MAC4: (R0..R4) += SRC[0..3] * rdx, lows on the CF chain (adcx), highs on the OF
 * chain (adox), both carries ending in R4. ROW: a row of the product, a * b[OFF / 8], into a fresh top word R4.
 * REDUCE: one Montgomery step, m = R0 * INV, (R0..R4) += m * p (R0 becomes 0); CLEAR clears the flags (and, for
 * a reduction of 4 limbs alone, zeroes R4). The 5 registers rotate from one step to the next. */
#define MAC4(SRC, R0, R1, R2, R3, R4)                                                                         \
    "mulxq 0(%[" #SRC "]), %%rax, %[hi]\n\t"                                                                   \
    "adcxq %%rax, %[" #R0 "]\n\t"                                                                              \
    "adoxq %[hi], %[" #R1 "]\n\t"                                                                              \
    "mulxq 8(%[" #SRC "]), %%rax, %[hi]\n\t"                                                                   \
    "adcxq %%rax, %[" #R1 "]\n\t"                                                                              \
    "adoxq %[hi], %[" #R2 "]\n\t"                                                                              \
    "mulxq 16(%[" #SRC "]), %%rax, %[hi]\n\t"                                                                  \
    "adcxq %%rax, %[" #R2 "]\n\t"                                                                              \
    "adoxq %[hi], %[" #R3 "]\n\t"                                                                              \
    "mulxq 24(%[" #SRC "]), %%rax, %[hi]\n\t"                                                                  \
    "adcxq %%rax, %[" #R3 "]\n\t"                                                                              \
    "adoxq %[hi], %[" #R4 "]\n\t"                                                                              \
    "movl $0, %%eax\n\t"                                                                                       \
    "adcxq %%rax, %[" #R4 "]\n\t"
#define ROW(OFF, R0, R1, R2, R3, R4)                                                                          \
    "movq " #OFF "(%[b]), %%rdx\n\t"                                                                           \
    "xorl %k[" #R4 "], %k[" #R4 "]\n\t" MAC4(a, R0, R1, R2, R3, R4)
#define REDUCE(CLEAR, R0, R1, R2, R3, R4)                                                                     \
    "movq %[" #R0 "], %%rdx\n\t"                                                                               \
    "imulq %[inv], %%rdx\n\t" CLEAR MAC4(p, R0, R1, R2, R3, R4)
#define KEEP_TOP "xorl %%eax, %%eax\n\t"
#define ZERO_TOP(R) "xorl %k[" #R "], %k[" #R "]\n\t"

static inline void mul_adx(u64 *r, const u64 *a, const u64 *b) {
    u64 t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4, hi;
    __asm__(
        ROW(0, t0, t1, t2, t3, t4) REDUCE(KEEP_TOP, t0, t1, t2, t3, t4)
        ROW(8, t1, t2, t3, t4, t0) REDUCE(KEEP_TOP, t1, t2, t3, t4, t0)
        ROW(16, t2, t3, t4, t0, t1) REDUCE(KEEP_TOP, t2, t3, t4, t0, t1)
        ROW(24, t3, t4, t0, t1, t2) REDUCE(KEEP_TOP, t3, t4, t0, t1, t2)
        : [t0] "+&r"(t0), [t1] "+&r"(t1), [t2] "+&r"(t2), [t3] "+&r"(t3), [t4] "=&r"(t4), [hi] "=&r"(hi)
        : [a] "r"(a), [b] "r"(b), [p] "r"(P), [inv] "m"(INV), "m"(*(const u64(*)[4])a), "m"(*(const u64(*)[4])b),
          "m"(*(const u64(*)[4])P)
        : "rax", "rdx", "cc");
    r[0] = t4, r[1] = t0, r[2] = t1, r[3] = t2;
}

/* r = a - m if that does not borrow, else a (branchless) */
static inline void sub_if_geq(u64 *r, const u64 *a, const u64 *m) {
    unsigned long long d0, d1, d2, d3;
    unsigned char bw = _subborrow_u64(0, a[0], m[0], &d0);
    bw = _subborrow_u64(bw, a[1], m[1], &d1);
    bw = _subborrow_u64(bw, a[2], m[2], &d2);
    bw = _subborrow_u64(bw, a[3], m[3], &d3);
    u64 keep = -(u64)bw; /* all ones: a < m, keep a */
    r[0] = (a[0] & keep) | (d0 & ~keep);
    r[1] = (a[1] & keep) | (d1 & ~keep);
    r[2] = (a[2] & keep) | (d2 & ~keep);
    r[3] = (a[3] & keep) | (d3 & ~keep);
}

static inline void add_adx(u64 *r, const u64 *a, const u64 *b) { /* a, b < 2p: r < 2p */
    u64 s0 = a[0], s1 = a[1], s2 = a[2], s3 = a[3], d0, d1, d2, d3;
    __asm__(
        "addq %[b0], %[s0]\n\t"
        "adcq %[b1], %[s1]\n\t"
        "adcq %[b2], %[s2]\n\t"
        "adcq %[b3], %[s3]\n\t" /* < 4p < 2^256: no carry out */
        "movq %[s0], %[d0]\n\t"
        "movq %[s1], %[d1]\n\t"
        "movq %[s2], %[d2]\n\t"
        "movq %[s3], %[d3]\n\t"
        "subq %[q0], %[d0]\n\t"
        "sbbq %[q1], %[d1]\n\t"
        "sbbq %[q2], %[d2]\n\t"
        "sbbq %[q3], %[d3]\n\t"
        "cmovcq %[s0], %[d0]\n\t" /* borrow: the sum was below 2p, keep it */
        "cmovcq %[s1], %[d1]\n\t"
        "cmovcq %[s2], %[d2]\n\t"
        "cmovcq %[s3], %[d3]\n\t"
        : [s0] "+&r"(s0), [s1] "+&r"(s1), [s2] "+&r"(s2), [s3] "+&r"(s3), [d0] "=&r"(d0), [d1] "=&r"(d1),
          [d2] "=&r"(d2), [d3] "=&r"(d3)
        : [b0] "m"(b[0]), [b1] "m"(b[1]), [b2] "m"(b[2]), [b3] "m"(b[3]), [q0] "m"(P2[0]), [q1] "m"(P2[1]),
          [q2] "m"(P2[2]), [q3] "m"(P2[3])
        : "cc");
    r[0] = d0, r[1] = d1, r[2] = d2, r[3] = d3;
}

static inline void pow5_adx(u64 *x) {
    fe x2, x4;
    mul_adx(x2, x, x);
    mul_adx(x4, x2, x2);
    mul_adx(x, x4, x);
}

/* w = a * b, the full 512-bit product (a, b < 2^256). */
static inline void mul_wide_adx(u64 *w, const u64 *a, const u64 *b) {
    u64 t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4, hi;
    __asm__(
        ROW(0, t0, t1, t2, t3, t4) "movq %[t0], 0(%[w])\n\t"
        ROW(8, t1, t2, t3, t4, t0) "movq %[t1], 8(%[w])\n\t"
        ROW(16, t2, t3, t4, t0, t1) "movq %[t2], 16(%[w])\n\t"
        ROW(24, t3, t4, t0, t1, t2) "movq %[t3], 24(%[w])\n\t"
        : [t0] "+&r"(t0), [t1] "+&r"(t1), [t2] "+&r"(t2), [t3] "+&r"(t3), [t4] "=&r"(t4), [hi] "=&r"(hi),
          "=m"(*(u64(*)[4])w)
        : [a] "r"(a), [b] "r"(b), [w] "r"(w), "m"(*(const u64(*)[4])a), "m"(*(const u64(*)[4])b)
        : "rax", "rdx", "cc");
    w[4] = t4, w[5] = t0, w[6] = t1, w[7] = t2;
}

/* acc += w (512 bits; the sums below never reach 2^512) */
static inline void add_wide_adx(u64 *acc, const u64 *w) {
    __asm__(
        "movq 0(%[w]), %%rax\n\t"
        "addq %%rax, 0(%[acc])\n\t"
        "movq 8(%[w]), %%rax\n\t"
        "adcq %%rax, 8(%[acc])\n\t"
        "movq 16(%[w]), %%rax\n\t"
        "adcq %%rax, 16(%[acc])\n\t"
        "movq 24(%[w]), %%rax\n\t"
        "adcq %%rax, 24(%[acc])\n\t"
        "movq 32(%[w]), %%rax\n\t"
        "adcq %%rax, 32(%[acc])\n\t"
        "movq 40(%[w]), %%rax\n\t"
        "adcq %%rax, 40(%[acc])\n\t"
        "movq 48(%[w]), %%rax\n\t"
        "adcq %%rax, 48(%[acc])\n\t"
        "movq 56(%[w]), %%rax\n\t"
        "adcq %%rax, 56(%[acc])\n\t"
        : "+m"(*(u64(*)[8])acc)
        : [acc] "r"(acc), [w] "r"(w), "m"(*(const u64(*)[8])w)
        : "rax", "cc");
}

/* r = acc / 2^256 mod p, below 2p, for acc = sum of at most 7 products of a canonical element and one below 2p
 * (acc < 14 p^2 < 0.501 * 2^512): the low half reduced (u < p + 1) plus the high half (< 0.501 * 2^256) is
 * below 3.65p (p > 0.189 * 2^256), and add_adx's one subtraction of 2p brings it below 2p. */
static inline void redc_wide_adx(u64 *r, const u64 *acc) {
    u64 t0 = acc[0], t1 = acc[1], t2 = acc[2], t3 = acc[3], t4, hi;
    __asm__(
        REDUCE(ZERO_TOP(t4), t0, t1, t2, t3, t4)
        REDUCE(ZERO_TOP(t0), t1, t2, t3, t4, t0)
        REDUCE(ZERO_TOP(t1), t2, t3, t4, t0, t1)
        REDUCE(ZERO_TOP(t2), t3, t4, t0, t1, t2)
        : [t0] "+&r"(t0), [t1] "+&r"(t1), [t2] "+&r"(t2), [t3] "+&r"(t3), [t4] "=&r"(t4), [hi] "=&r"(hi)
        : [p] "r"(P), [inv] "m"(INV), "m"(*(const u64(*)[4])P)
        : "rax", "rdx", "cc");
    u64 u[4] = {t4, t0, t1, t2};
    add_adx(r, u, acc + 4);
}

/* sum_j m[j] * s[j] (m canonical, s below 2p, n <= 7): one reduction for the whole sum */
static inline void dot_adx(u64 *r, const fe *m, const fe *s, int n) {
    u64 acc[8], w[8];
    mul_wide_adx(acc, m[0], s[0]);
    for (int j = 1; j < n; j++) {
        mul_wide_adx(w, m[j], s[j]);
        add_wide_adx(acc, w);
    }
    redc_wide_adx(r, acc);
}

static void matvec_adx(fe *s, const fe m[MAX_T][MAX_T], int t) {
    fe out[MAX_T];
    for (int i = 0; i < t; i++) dot_adx(out[i], m[i], s, t);
    memcpy(s, out, sizeof(fe) * t);
}

static inline void partial_round_adx(fe *s, const Params *p, int r, int t) {
    fe x, tmp;
    u64 acc[8], w[8];
    memcpy(x, s[0], sizeof(fe));
    pow5_adx(x);
    add_adx(x, x, p->post[r]);
    mul_wide_adx(acc, p->a00[r], x);
    for (int i = 1; i < t; i++) {
        mul_wide_adx(w, p->w[r][i - 1], s[i]);
        add_wide_adx(acc, w);
        mul_adx(tmp, p->v[r][i - 1], x);
        add_adx(s[i], s[i], tmp);
    }
    redc_wide_adx(s[0], acc);
}

static inline void canonical_adx(u64 *x) { sub_if_geq(x, x, P); } /* below 2p -> below p */

DEFINE_PERMUTE(permute_adx, add_adx, pow5_adx, matvec_adx, dot_adx, partial_round_adx, canonical_adx)
#endif

/* The permutation in use: the portable one, or permute_adx where the CPU has BMI2 and ADX (chosen at import). */
static void (*permute_impl)(u64 *, const fe *, int) = permute;

static int check_t(int t) {
    if (t < 2 || t > MAX_T || !PARAMS[t].loaded) {
        PyErr_Format(PyExc_ValueError, "no Poseidon constants loaded for %d inputs", t - 1);
        return 0;
    }
    return 1;
}

/* load(t, partial, blob): blob = canonical LE elements c (8t), mds (t*t), pre (t*t), fpc (t), post, a00 (partial
 * each), w, v (partial * (t - 1) each). */
static PyObject *py_load(PyObject *self, PyObject *args) {
    int t, partial;
    Py_buffer blob;
    if (!PyArg_ParseTuple(args, "iiy*", &t, &partial, &blob)) return NULL;
    Py_ssize_t need = 32 * (Py_ssize_t)(FULL * t + 2 * t * t + t + 2 * partial + 2 * partial * (t - 1));
    if (t < 2 || t > MAX_T || partial < 1 || partial > MAX_PARTIAL || blob.len != need) {
        PyBuffer_Release(&blob);
        PyErr_Format(PyExc_ValueError, "bad Poseidon constants for t=%d, partial=%d (%zd bytes, expected %zd)", t,
                     partial, blob.len, need);
        return NULL;
    }
    Params *p = &PARAMS[t];
    const unsigned char *b = blob.buf;
#define NEXT(dst) (to_mont((dst), b), b += 32)
    for (int r = 0; r < FULL; r++)
        for (int i = 0; i < t; i++) NEXT(p->c[r][i]);
    for (int i = 0; i < t; i++)
        for (int j = 0; j < t; j++) NEXT(p->mds[i][j]);
    for (int i = 0; i < t; i++)
        for (int j = 0; j < t; j++) NEXT(p->pre[i][j]);
    for (int i = 0; i < t; i++) NEXT(p->fpc[i]);
    for (int r = 0; r < partial; r++) NEXT(p->post[r]);
    for (int r = 0; r < partial; r++) NEXT(p->a00[r]);
    for (int r = 0; r < partial; r++)
        for (int i = 0; i < t - 1; i++) NEXT(p->w[r][i]);
    for (int r = 0; r < partial; r++)
        for (int i = 0; i < t - 1; i++) NEXT(p->v[r][i]);
#undef NEXT
    p->partial = partial;
    p->loaded = 1;
    PyBuffer_Release(&blob);
    Py_RETURN_NONE;
}

/* hash(n, data) -> bytes: data holds k groups of n canonical elements; returns k hashes (32 bytes each). */
static PyObject *py_hash(PyObject *self, PyObject *args) {
    int n;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &n, &data)) return NULL;
    if (!check_t(n + 1) || data.len % (32 * n)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "data is not a whole number of input groups");
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t k = data.len / (32 * n);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * k);
    if (!out) {
        PyBuffer_Release(&data);
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *in = data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < k; g++) {
        fe inputs[MAX_T - 1], h;
        for (int i = 0; i < n; i++) to_mont(inputs[i], in + 32 * (g * n + i));
        permute_impl(h, inputs, n + 1);
        from_mont(o + 32 * g, h);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return out;
}

/* leaves(values, scales, chunk, block, values_per_field, scales_per_field, rate) -> (hashes, norms):
 * values = k * chunk int8 codes, scales = k * chunk / block uint32 (LE). Per chunk: the bytes v + 127 packed
 * values_per_field per element (LE), then the scales scales_per_field per element (32-bit LE words); a sponge
 * of Poseidon(rate + 1) over them (h, then rate elements, zero-padded); and the norm sum_b S_b^2 sum v^2 as a
 * 16-byte LE integer. zk/leaves.py is the reference. */
static PyObject *py_leaves(PyObject *self, PyObject *args) {
    Py_buffer values, scales;
    int chunk, block, vpf, spf, rate;
    if (!PyArg_ParseTuple(args, "y*y*iiiii", &values, &scales, &chunk, &block, &vpf, &spf, &rate)) return NULL;
    PyObject *result = NULL;
    int per = block > 0 ? chunk / block : 0;
    if (chunk <= 0 || block <= 0 || chunk % block || vpf < 1 || vpf > 31 || spf < 1 || spf > 7 || rate < 1 || rate > MAX_T - 2 ||
        !check_t(rate + 2) || values.len % chunk || scales.len != 4 * (values.len / chunk) * per) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "leaves: inconsistent sizes");
        goto done;
    }
    Py_ssize_t k = values.len / chunk;
    int packed_len = (chunk + vpf - 1) / vpf + (per + spf - 1) / spf;
    PyObject *hashes = PyBytes_FromStringAndSize(NULL, 32 * k);
    PyObject *norms = PyBytes_FromStringAndSize(NULL, 16 * k);
    fe *packed = PyMem_RawMalloc(sizeof(fe) * (packed_len + rate));
    if (!hashes || !norms || !packed) {
        Py_XDECREF(hashes);
        Py_XDECREF(norms);
        PyMem_RawFree(packed);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    unsigned char *ho = (unsigned char *)PyBytes_AS_STRING(hashes);
    unsigned char *no = (unsigned char *)PyBytes_AS_STRING(norms);
    const int8_t *v = values.buf;
    const unsigned char *sc = scales.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < k; g++) {
        const int8_t *cv = v + g * chunk;
        const unsigned char *cs = sc + 4 * g * per;
        unsigned char buf[32];
        int slot = 0;
        for (int i = 0; i < chunk; i += vpf) {
            memset(buf, 0, 32);
            for (int j = 0; j < vpf && i + j < chunk; j++) buf[j] = (unsigned char)(cv[i + j] + 127);
            to_mont(packed[slot++], buf);
        }
        for (int i = 0; i < per; i += spf) {
            memset(buf, 0, 32);
            for (int j = 0; j < spf && i + j < per; j++) memcpy(buf + 4 * j, cs + 4 * (i + j), 4);
            to_mont(packed[slot++], buf);
        }
        for (int i = 0; i < rate; i++) memset(packed[slot + i], 0, sizeof(fe));
        fe h = {0, 0, 0, 0}, inp[MAX_T - 1];
        for (int a = 0; a < slot; a += rate) {
            memcpy(inp[0], h, sizeof(fe));
            memcpy(inp[1], packed[a], sizeof(fe) * rate);
            permute_impl(h, inp, rate + 2); /* h and rate elements: t = rate + 2 */
        }
        from_mont(ho + 32 * g, h);
        u128 norm = 0;
        for (int b = 0; b < per; b++) {
            uint32_t s;
            memcpy(&s, cs + 4 * b, 4);
            u64 sq = 0;
            for (int i = b * block; i < (b + 1) * block; i++) sq += (u64)((int64_t)cv[i] * cv[i]);
            norm += (u128)((u64)s * s) * sq;
        }
        memcpy(no + 16 * g, &norm, 16);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(packed);
    result = Py_BuildValue("(NN)", hashes, norms);
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&scales);
    return result;
}

static int adx_supported(void) {
#ifdef HAVE_ADX_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("adx");
#else
    return 0;
#endif
}

/* impl() -> "adx" | "portable": the permutation in use. */
static PyObject *py_impl(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(permute_impl == permute ? "portable" : "adx");
}

/* use(name): "portable" or "adx" (ValueError where this CPU or build has no such path); for tests and benchmarks. */
static PyObject *py_use(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    if (!strcmp(name, "portable")) {
        permute_impl = permute;
#ifdef HAVE_ADX_PATH
    } else if (!strcmp(name, "adx") && adx_supported()) {
        permute_impl = permute_adx;
#endif
    } else {
        PyErr_Format(PyExc_ValueError, "no Poseidon path %s here (this CPU/build has: %s)", name,
                     adx_supported() ? "portable, adx" : "portable");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"load", py_load, METH_VARARGS, "load(t, partial, blob): constants for Poseidon of t - 1 inputs"},
    {"hash", py_hash, METH_VARARGS, "hash(n, data) -> bytes: Poseidon of each group of n 32-byte LE elements"},
    {"impl", py_impl, METH_NOARGS, "impl() -> 'adx' | 'portable': the permutation in use"},
    {"use", py_use, METH_VARARGS, "use(name): pick the 'portable' or 'adx' permutation (tests, benchmarks)"},
    {"leaves", py_leaves, METH_VARARGS, "leaves(values, scales, chunk, block, vpf, spf, rate) -> (hashes, norms)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_poseidon", "Native Poseidon (zk/_poseidon.c)", -1,
                                    METHODS};

PyMODINIT_FUNC PyInit__poseidon(void) {
#ifdef HAVE_ADX_PATH
    if (adx_supported()) permute_impl = permute_adx;
#endif
    return PyModule_Create(&MODULE);
}
