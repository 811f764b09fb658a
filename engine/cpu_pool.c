/* A parallel-for for the decode step's kernels, with a hand-off in
 * microseconds rather than the ~90 us of a Python thread pool.
 *
 * A decode step is ~75 matrix products of 0.1-3 ms each. Split over two
 * cores through concurrent.futures, the hand-off cost more than a layer
 * matrix's half (engine/cpu_quant.py: splitting at 1-4 rows was 10-30%
 * slower), so every layer matrix ran on one core at ~10 GB/s while the
 * machine reads ~25 GB/s with two. Here the workers are C threads that
 * spin (with pause, yielding the core now and then) for a while after each
 * job, so the next product of the same step finds them awake, and sleep on
 * a futex once the step is over: an idle server costs no CPU.
 *
 * One caller at a time owns the pool; a second caller (another Python
 * thread: a calibration beside a completion) runs its parts itself. Parts
 * are numbered; which thread runs a part never changes its result, so a
 * product's bits do not depend on the thread count.
 * Built with cpu_rows.c into one library by cpu_rows.py.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

typedef void (*tealtab_part_fn)(void *ctx, int64_t part);

#define MAX_WORKERS 63
/* How long an idle worker stays awake (spinning) after its last job. A
 * decode step's gaps between products are tens to hundreds of microseconds;
 * between steps, sampling and Python take about a millisecond. */
#define SPIN_NS 3000000LL

static pthread_mutex_t owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int n_workers = 0;
static atomic_int generation;   /* bumped per job; the futex word */
static atomic_int sleepers;     /* workers in (or entering) the futex wait */
/* The current job in one word, so that a part is claimed with the job it
 * belongs to: job number (24 bits) | part count (20) | next part (20). A
 * worker that wakes late cannot take a part of a job that has ended, nor a
 * part number of one job with another's count. */
static _Atomic uint64_t work;
static atomic_llong parts_done;
static uint64_t job_number;
static tealtab_part_fn job_fn; /* stable while any part of the job is unfinished */
static void *job_ctx;
#define PART_BITS 20
#define PART_MASK ((1ULL << PART_BITS) - 1)
#define MAX_PARTS ((int64_t)PART_MASK)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void wait_change(int seen) {
#ifdef __linux__
    syscall(SYS_futex, (int *)&generation, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
    /* No futex: poll once a millisecond (an idle worker wakes 1000 times a second,
     * and a product after an idle spell waits up to 1 ms for it). */
    (void)seen;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
#endif
}

static void wake_all(void) {
#ifdef __linux__
    syscall(SYS_futex, (int *)&generation, FUTEX_WAKE_PRIVATE, MAX_WORKERS, NULL, NULL, 0);
#endif
}

/* Takes parts until none is left. */
static void run_parts(void) {
    uint64_t v = atomic_load(&work);
    for (;;) {
        uint64_t next = v & PART_MASK, count = (v >> PART_BITS) & PART_MASK;
        if (next >= count) return;
        if (!atomic_compare_exchange_weak(&work, &v, v + 1)) continue; /* v reloaded */
        job_fn(job_ctx, (int64_t)next);
        atomic_fetch_add(&parts_done, 1);
        v = atomic_load(&work);
    }
}

static void *worker(void *arg) {
    (void)arg;
    int seen = atomic_load(&generation);
    for (;;) {
        int64_t idle_since = now_ns();
        int spins = 0;
        while (atomic_load(&generation) == seen) {
            CPU_RELAX();
            if (++spins % 256) continue;
            if (spins % 4096 == 0) sched_yield(); /* let a runnable thread (torch's) have the core */
            if (now_ns() - idle_since > SPIN_NS) {
                atomic_fetch_add(&sleepers, 1);
                if (atomic_load(&generation) == seen) wait_change(seen);
                atomic_fetch_sub(&sleepers, 1);
                idle_since = now_ns();
            }
        }
        seen = atomic_load(&generation);
        run_parts();
    }
    return NULL;
}

/* Starts threads - 1 workers (once; later calls return the count started). */
int64_t tealtab_pool_start(int64_t threads) {
    pthread_mutex_lock(&init_lock);
    while (n_workers < threads - 1 && n_workers < MAX_WORKERS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        ++n_workers;
    }
    int64_t started = n_workers + 1;
    pthread_mutex_unlock(&init_lock);
    return started;
}

/* Threads that run parts: the caller and the workers. */
int64_t tealtab_pool_threads(void) { return n_workers + 1; }

/* fn(ctx, p) for p in [0, parts), over the pool; returns when all are done.
 * Where the pool is busy (another caller) or absent, runs them here in order. */
void tealtab_parallel(tealtab_part_fn fn, void *ctx, int64_t parts) {
    if (parts <= 1 || parts > MAX_PARTS || n_workers == 0 || pthread_mutex_trylock(&owner) != 0) {
        for (int64_t p = 0; p < parts; ++p) fn(ctx, p);
        return;
    }
    job_fn = fn, job_ctx = ctx;
    atomic_store(&parts_done, 0);
    job_number = (job_number + 1) & 0xFFFFFF;
    atomic_store(&work, (job_number << (2 * PART_BITS)) | ((uint64_t)parts << PART_BITS)); /* publishes */
    atomic_fetch_add(&generation, 1); /* wakes the spinners */
    if (atomic_load(&sleepers) > 0) wake_all();
    run_parts();
    while (atomic_load(&parts_done) < parts) CPU_RELAX();
    pthread_mutex_unlock(&owner);
}
