/*
 * The layer memory pool: PC1 sectors of a machine share one budget of layer memory.
 *
 * One arena of equal blocks shared by the sectors labeling at once. A job (one sector, or a
 * batch labeled in lockstep) is lent its current layer block by block as labeling advances
 * and gives its previous layer back when a layer completes; a job that would exhaust the
 * arena waits on a condition variable, never spinning.
 *
 * Waiting can deadlock if every job holds part of a layer and needs the rest, so blocks are
 * granted by the banker's rule: only if afterwards every job can still finish its current
 * layer in some order, each returning its previous layer when it does. A job is admitted
 * only while the held layers plus the largest job's layer fit (sum B + max B <= blocks);
 * then, once all jobs finish a layer, one can always start its next: no deadlock.
 *
 * Waits take a timeout so the caller (a Python thread) regains control now and then to
 * notice cancellation; a timed-out grow keeps the blocks it already got.
 *
 * Idle memory goes back to the OS: of the free blocks, only the `idle` most recently
 * returned (the ones handed out next: the free list is a stack) stay resident; the rest are
 * dropped with MADV_DONTNEED as they sink below that watermark. DONTNEED rather than
 * MADV_FREE: FREE leaves the pages counted in RSS (and out of MemAvailable's sure part)
 * until the kernel is short of memory, which is exactly what misleads a worker's memory
 * admission; DONTNEED makes RSS follow the blocks lent at once. Its price is zero-filled
 * pages when a dropped block is lent again: ~10 ms per 64 MiB, against seconds to label it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "labeler_internal.h"

struct labeler_pool {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* blocks came back, or a job left */
    uint8_t *arena;
    uint64_t arena_bytes;
    uint64_t block_bytes;
    uint64_t blocks;
    uint64_t nfree;
    uint32_t *free; /* stack of free block indices: the last freed is reused first (warm) */
    uint8_t *resident; /* per block: may hold pages (lent since it was last dropped) */
    uint64_t idle;     /* free blocks kept resident: the top of the free stack */
    labeler_pool_job *jobs;
};

int labeler_pool_create(uint64_t capacity, uint64_t block_bytes, labeler_pool **out) {
    if (!out || block_bytes < 32 || (block_bytes & (block_bytes - 1)) ||
        capacity / block_bytes < 2 || capacity / block_bytes > UINT32_MAX)
        return LABELER_E_ARG;
    labeler_pool *p = calloc(1, sizeof *p);
    if (!p) return LABELER_E_NOMEM;
    p->block_bytes = block_bytes;
    p->blocks = capacity / block_bytes;
    p->arena_bytes = p->blocks * block_bytes;
    p->free = malloc(p->blocks * sizeof *p->free);
    p->resident = calloc(p->blocks, 1);
    /* Untouched pages cost nothing: RSS follows the blocks actually lent. */
    void *arena = mmap(NULL, p->arena_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!p->free || !p->resident || arena == MAP_FAILED) {
        if (arena != MAP_FAILED) munmap(arena, p->arena_bytes);
        free(p->free);
        free(p->resident);
        free(p);
        return LABELER_E_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    /* Expander parents are random reads: 2 MiB pages keep them off the page walker. */
    madvise(arena, p->arena_bytes, MADV_HUGEPAGE);
#endif
    p->arena = arena;
    for (uint64_t i = 0; i < p->blocks; i++) p->free[i] = (uint32_t)(p->blocks - 1 - i);
    p->nfree = p->blocks;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    *out = p;
    return LABELER_OK;
}

int labeler_pool_destroy(labeler_pool *p) {
    if (!p) return LABELER_E_ARG;
    pthread_mutex_lock(&p->lock);
    int busy = p->jobs != NULL;
    pthread_mutex_unlock(&p->lock);
    if (busy) return LABELER_E_BUSY;
    munmap(p->arena, p->arena_bytes);
    pthread_cond_destroy(&p->changed);
    pthread_mutex_destroy(&p->lock);
    free(p->free);
    free(p->resident);
    free(p);
    return LABELER_OK;
}

uint8_t *labeler_pool_base(const labeler_pool *p) { return p->arena; }
uint64_t labeler_pool_blocks(const labeler_pool *p) { return p->blocks; }
uint64_t labeler_pool_block_bytes(const labeler_pool *p) { return p->block_bytes; }

uint64_t labeler_pool_free(labeler_pool *p) {
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->nfree;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* Absolute CLOCK_REALTIME deadline timeout_ms from now (pthread_cond_timedwait's clock). */
static struct timespec deadline_in(uint32_t timeout_ms) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += timeout_ms / 1000;
    t.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Blocks can only go back to the OS whole pages at a time. */
static int droppable(const labeler_pool *p) {
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 && p->block_bytes >= (uint64_t)page;
}

/* Drop the free blocks at stack positions [from, to): they sank below the watermark. */
static void drop(labeler_pool *p, uint64_t from, uint64_t to) {
    if (!droppable(p)) return;
    for (uint64_t i = from; i < to; i++) {
        uint32_t b = p->free[i];
        if (!p->resident[b]) continue;
        madvise(p->arena + (uint64_t)b * p->block_bytes, p->block_bytes, MADV_DONTNEED);
        p->resident[b] = 0;
    }
}

static void give_back(labeler_pool *p, const uint32_t *blocks, uint64_t n) {
    uint64_t before = p->nfree;
    for (uint64_t i = 0; i < n; i++) p->free[p->nfree++] = blocks[i];
    /* Positions below nfree - idle must hold no pages; the pushes moved that line up. */
    uint64_t was = before > p->idle ? before - p->idle : 0;
    uint64_t now = p->nfree > p->idle ? p->nfree - p->idle : 0;
    drop(p, was, now);
}

void labeler_pool_set_idle(labeler_pool *p, uint64_t blocks) {
    pthread_mutex_lock(&p->lock);
    p->idle = blocks;
    drop(p, 0, p->nfree > blocks ? p->nfree - blocks : 0);
    pthread_mutex_unlock(&p->lock);
}

static uint32_t take(labeler_pool *p) {
    uint32_t b = p->free[--p->nfree];
    p->resident[b] = 1; /* the job writes it */
    return b;
}

/* A job handed to the pool it was not admitted by (or never admitted): refuse it. */
static int owned(const labeler_pool *p, const labeler_pool_job *job) {
    return p && job && job->owner == p;
}

static int admissible(const labeler_pool *p, uint64_t need) {
    uint64_t held = 0, largest = need;
    for (const labeler_pool_job *j = p->jobs; j; j = j->next) {
        held += j->per_layer;
        if (j->per_layer > largest) largest = j->per_layer;
    }
    return held + need + largest <= p->blocks;
}

/*
 * Banker's check: after one more block to `job`, can every job finish its layer, in some
 * order? Finishing takes a job's remaining blocks and returns its previous layer (none in
 * layer 1), so unlike the classic banker, finishing can leave less free than before, and
 * the order matters. The best order: first the jobs that return at least what they take
 * (in any order that fits: they only add), then the others by what they return,
 * largest first (an exchange argument: swapping two neighbours out of that order never
 * turns an infeasible sequence feasible). A handful of jobs: O(n^2) is fine.
 */
static int safe_to_grant(const labeler_pool *p, const labeler_pool_job *job) {
    if (p->nfree == 0) return 0;
    uint64_t free = p->nfree - 1;
    unsigned njobs = 0;
    for (const labeler_pool_job *j = p->jobs; j; j = j->next) njobs++;
    unsigned char finished[njobs ? njobs : 1];
    for (unsigned i = 0; i < njobs; i++) finished[i] = 0;
    unsigned left = njobs;
    /* Jobs that give back at least what they need, while one fits. */
    for (int progress = 1; left && progress;) {
        progress = 0;
        unsigned i = 0;
        for (const labeler_pool_job *j = p->jobs; j; j = j->next, i++) {
            uint64_t rest = j->per_layer - j->ncur - (j == job);
            if (finished[i] || j->nprev < rest || rest > free) continue;
            free = free - rest + j->nprev;
            finished[i] = 1;
            left--;
            progress = 1;
        }
    }
    /* The rest, the one returning most first; each must fit when its turn comes. */
    while (left) {
        const labeler_pool_job *best = NULL;
        unsigned best_i = 0, i = 0;
        for (const labeler_pool_job *j = p->jobs; j; j = j->next, i++)
            if (!finished[i] && (!best || j->nprev > best->nprev)) {
                best = j;
                best_i = i;
            }
        uint64_t rest = best->per_layer - best->ncur - (best == job);
        if (rest > free) return 0;
        free = free - rest + best->nprev;
        finished[best_i] = 1;
        left--;
    }
    return 1;
}

int labeler_pool_join(labeler_pool *p, uint64_t per_layer, uint32_t timeout_ms,
                      labeler_pool_job **out) {
    if (!p || !out || per_layer == 0 || 2 * per_layer > p->blocks) return LABELER_E_ARG;
    labeler_pool_job *job = calloc(1, sizeof *job);
    if (job) {
        job->cur = malloc(per_layer * sizeof *job->cur);
        job->prev = malloc(per_layer * sizeof *job->prev);
    }
    if (!job || !job->cur || !job->prev) {
        if (job) {
            free(job->cur);
            free(job->prev);
        }
        free(job);
        return LABELER_E_NOMEM;
    }
    job->per_layer = per_layer;
    job->owner = p;
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&p->lock);
    int rc = 0;
    while (!admissible(p, per_layer) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&p->changed, &p->lock, &until);
    if (!admissible(p, per_layer)) {
        pthread_mutex_unlock(&p->lock);
        free(job->cur);
        free(job->prev);
        free(job);
        return LABELER_E_TIMEOUT;
    }
    job->next = p->jobs;
    p->jobs = job;
    pthread_mutex_unlock(&p->lock);
    *out = job;
    return LABELER_OK;
}

int labeler_pool_grow(labeler_pool *p, labeler_pool_job *job, uint64_t blocks,
                      uint32_t timeout_ms) {
    if (!owned(p, job)) return LABELER_E_FOREIGN;
    if (blocks > job->per_layer - job->ncur) return LABELER_E_ARG;
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&p->lock);
    for (uint64_t i = 0; i < blocks; i++) {
        int rc = 0;
        while (!safe_to_grant(p, job) && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&p->changed, &p->lock, &until);
        if (!safe_to_grant(p, job)) {
            pthread_mutex_unlock(&p->lock);
            return LABELER_E_TIMEOUT;
        }
        job->cur[job->ncur++] = take(p);
    }
    pthread_mutex_unlock(&p->lock);
    return LABELER_OK;
}

int labeler_pool_finish_layer(labeler_pool *p, labeler_pool_job *job) {
    if (!owned(p, job)) return LABELER_E_FOREIGN;
    if (job->ncur != job->per_layer) return LABELER_E_ARG;
    pthread_mutex_lock(&p->lock);
    give_back(p, job->prev, job->nprev);
    uint32_t *t = job->prev;
    job->prev = job->cur;
    job->nprev = job->ncur;
    job->cur = t;
    job->ncur = 0;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    return LABELER_OK;
}

int labeler_pool_leave(labeler_pool *p, labeler_pool_job *job) {
    if (!owned(p, job)) return LABELER_E_FOREIGN;
    pthread_mutex_lock(&p->lock);
    give_back(p, job->prev, job->nprev);
    give_back(p, job->cur, job->ncur);
    for (labeler_pool_job **at = &p->jobs; *at; at = &(*at)->next)
        if (*at == job) {
            *at = job->next;
            break;
        }
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    job->owner = NULL; /* a second leave of a freed job is still undefined; of a live one, refused */
    free(job->cur);
    free(job->prev);
    free(job);
    return LABELER_OK;
}

int labeler_pool_can_grant(labeler_pool *p, const labeler_pool_job *job) {
    if (!owned(p, job)) return LABELER_E_FOREIGN;
    pthread_mutex_lock(&p->lock);
    int ok = safe_to_grant(p, job);
    pthread_mutex_unlock(&p->lock);
    return ok;
}
