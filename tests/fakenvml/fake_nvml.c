/*
 * A fake libnvidia-ml.so.1 for tests: pynvml's real ctypes code runs against it.
 *
 * Build: gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o DIR/libnvidia-ml.so.1 fake_nvml.c
 *
 * The state is re-read on EVERY call from the text file named by $FAKE_NVML_STATE, so a test
 * can change it between samples (write it atomically: tmp file + rename). One directive per
 * line; '#' starts a comment line; "NA" as a value means the call returns NOT_SUPPORTED (3).
 *
 *   init_error CODE        nvmlInit* returns CODE (e.g. 9 = driver not loaded)
 *   driver VERSION         nvmlSystemGetDriverVersion
 *   memory_v2 off          nvmlDeviceGetMemoryInfo_v2 returns FUNCTION_NOT_FOUND (13)
 *   gpu UUID               starts a GPU (NVML index = order in the file); keys below apply to it
 *   mig UUID               starts a MIG instance of the current GPU; keys below apply to it.
 *                          A MIG instance's util, power and temp default to NA.
 *   index N                NVML index reported by nvmlDeviceGetIndex (default: file order)
 *   minor N | minor NA     GPU only: nvmlDeviceGetMinorNumber, the N of /dev/nvidiaN (default:
 *                          the NVML index); it may differ from the index order, as on real nodes
 *   gi N                   MIG only: nvmlDeviceGetGpuInstanceId (default: position + 1); also the
 *                          gpuInstanceId of the instance's processes
 *   gpm 0|1|NA             GPU only: nvmlGpmQueryDeviceSupport's isSupportedDevice; NA makes
 *                          the query return NOT_SUPPORTED (default 0: no GPM, as before Hopper)
 *   gpm_metric ID VALUE    a GPM metric (NVML_GPM_METRIC_* id) of this GPU or MIG instance; a
 *                          metric not listed comes back from nvmlGpmMetricsGet with its own
 *                          nvmlReturn = NOT_SUPPORTED
 *   name REST OF LINE
 *   util GPU_PCT MEM_PCT | util NA
 *   mem TOTAL USED [RESERVED] | mem NA     (bytes; v1 "used" includes reserved, as NVML's does)
 *   power_mw MW | power_mw NA
 *   temp C | temp NA
 *   proc PID USED_BYTES    (USED_BYTES "NA" = NVML_VALUE_NOT_AVAILABLE, i.e. ULLONG_MAX)
 *   procs NA               process listing returns NOT_SUPPORTED
 *   mig_mode 0|1|NA        GPU only; default NA (nvmlDeviceGetMigMode returns NOT_SUPPORTED)
 *   lost                   every call on this device (and its MIG instances) returns 15 (GPU lost)
 *   error CODE             every call on this device (and its MIG instances) returns CODE
 *
 * GPM works like the real counters: each source (a GPU, or one GPU instance of it) has running
 * totals that every nvmlGpmSampleGet / nvmlGpmMigSampleGet (parent GPU handle + GPU instance
 * id) advances by the source's current gpm_metric values and copies into the sample.
 * nvmlGpmMetricsGet(sample1, sample2) divides the difference by the number of samples between
 * them: a metric is the mean of the values the source had at the samples in (sample1, sample2],
 * i.e. the activity of that interval when the state is steady between samples. Pairing a new
 * sample with an old one therefore averages in the old activity, as on a real GPU. A metric
 * the source does not list at sample2 comes back NOT_SUPPORTED; "nan" as a value comes back NaN. It refuses (INVALID_ARGUMENT)
 * samples of different sources, an unfilled or freed sample and a sample2 not newer than
 * sample1. fake_nvml_gpm_samples_live() counts allocated samples.
 *
 * A missing or unreadable state file makes nvmlInit* return 9 (driver not loaded) and any later
 * call return 999 (unknown). Test hook: fake_nvml_call_count("nvmlDeviceGetUUID") returns how
 * many times a symbol was called since load (or since fake_nvml_reset_counts()).
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OK 0
#define E_UNINIT 1
#define E_INVALID 2
#define E_NOT_SUPPORTED 3
#define E_NOT_FOUND 6
#define E_INSUFFICIENT 7
#define E_DRIVER 9
#define E_FUNCTION 13
#define E_LOST 15
#define E_VERSION 25
#define E_UNKNOWN 999
#define NA (-1LL)
#define MAX_GPUS 16
#define MAX_MIG 7
#define MAX_PROCS 64
#define MAX_METRICS 64
#define METRIC_IDS 512 /* NVML_GPM_METRIC_* ids are below this */
#define MAX_GPM_REQUEST 1024
#define GPM_MAGIC 0x47504d53u

typedef struct { unsigned pid; unsigned long long used; unsigned gi; unsigned ci; } proc_v3;
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } mem_v2;
typedef struct { int gpu, mig; } handle_t; /* mig = -1 for the GPU itself */
typedef struct {
    char uuid[96], name[96];
    long long index, util_gpu, util_mem, mem_total, mem_used, mem_reserved, power_mw, temp;
    long long minor, gi;
    int nprocs, procs_na, fail; /* fail: error code of every call, 0 = none */
    unsigned proc_pid[MAX_PROCS];
    unsigned long long proc_used[MAX_PROCS];
    int nmetrics;
    unsigned metric_id[MAX_METRICS];
    double metric_val[MAX_METRICS];
} dev_t_;
typedef struct { dev_t_ d; long long mig_mode, gpm; int nmig; dev_t_ mig[MAX_MIG]; } gpu_t;
typedef struct { unsigned version, supported; } gpm_support_t;
typedef struct { unsigned long long count; double sum[METRIC_IDS]; } gpm_totals_t;
typedef struct {
    unsigned magic;
    int filled, gpu, slot; /* slot 0: the whole GPU; m + 1: its MIG instance m */
    unsigned long long stamp;
    gpm_totals_t totals;
    unsigned char present[METRIC_IDS];
} gpm_sample_t;
typedef struct { const char *short_name, *long_name, *unit; } metric_info_t;
typedef struct { unsigned id; int ret; double value; metric_info_t info; } gpm_metric_t;
typedef struct {
    unsigned version, count;
    gpm_sample_t *sample1, *sample2;
    gpm_metric_t metrics[]; /* count entries */
} gpm_metrics_get_t;

static struct { int init_error, memory_v2_off, ngpus; char driver[80]; gpu_t g[MAX_GPUS]; } S;
static handle_t H[MAX_GPUS][MAX_MIG + 1];
static int initialised;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const char *names[] = {
    "nvmlInitWithFlags", "nvmlInit_v2", "nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetUUID",
    "nvmlDeviceGetName", "nvmlDeviceGetIndex", "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTemperature", "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceIsMigDeviceHandle", "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetMinorNumber", "nvmlDeviceGetGpuInstanceId", "nvmlGpmQueryDeviceSupport",
    "nvmlGpmSampleAlloc", "nvmlGpmSampleFree", "nvmlGpmSampleGet", "nvmlGpmMigSampleGet",
    "nvmlGpmMetricsGet", NULL};
static unsigned long long counts[64];
static long gpm_live;
static unsigned long long gpm_clock;
static gpm_totals_t gpm_totals[MAX_GPUS][MAX_MIG + 1]; /* kept across state reloads */

static void count(const char *fn) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], fn)) { counts[i]++; return; }
}
unsigned long long fake_nvml_call_count(const char *fn) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], fn)) return counts[i];
    return 0;
}
void fake_nvml_reset_counts(void) { memset(counts, 0, sizeof counts); }
long fake_nvml_gpm_samples_live(void) { return gpm_live; }

static long long num(const char *s) { return (!s || !strcmp(s, "NA")) ? NA : strtoll(s, NULL, 10); }

static void dev_defaults(dev_t_ *d, const char *uuid, long long index, int is_mig) {
    memset(d, 0, sizeof *d);
    snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
    snprintf(d->name, sizeof d->name, "Fake GPU");
    d->index = d->minor = index;
    d->util_gpu = d->util_mem = d->power_mw = d->temp = is_mig ? NA : 0;
}

static int load(void) { /* 0 on success */
    const char *path = getenv("FAKE_NVML_STATE");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return -1;
    memset(&S, 0, sizeof S);
    snprintf(S.driver, sizeof S.driver, "550.54.15");
    dev_t_ *d = NULL;
    gpu_t *g = NULL;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *key = strtok(line, " \t");
        if (!key || key[0] == '#') continue;
        char *rest = strtok(NULL, ""), whole[256] = "";
        if (rest) snprintf(whole, sizeof whole, "%s", rest + strspn(rest, " \t"));
        char *a = rest ? strtok(rest, " \t") : NULL, *b = a ? strtok(NULL, " \t") : NULL;
        char *c = b ? strtok(NULL, " \t") : NULL;
        if (!strcmp(key, "init_error")) S.init_error = (int)num(a);
        else if (!strcmp(key, "driver") && a) snprintf(S.driver, sizeof S.driver, "%s", a);
        else if (!strcmp(key, "memory_v2") && a) S.memory_v2_off = !strcmp(a, "off");
        else if (!strcmp(key, "gpu") && a && S.ngpus < MAX_GPUS) {
            g = &S.g[S.ngpus];
            dev_defaults(&g->d, a, S.ngpus, 0);
            g->mig_mode = NA;
            g->gpm = 0;
            S.ngpus++;
            d = &g->d;
        } else if (!strcmp(key, "mig") && a && g && g->nmig < MAX_MIG) {
            d = &g->mig[g->nmig++];
            dev_defaults(d, a, g->d.index, 1);
            d->gi = g->nmig; /* position + 1 */
        } else if (!d) continue;
        else if (!strcmp(key, "index")) d->index = num(a);
        else if (!strcmp(key, "minor")) d->minor = num(a);
        else if (!strcmp(key, "gi")) d->gi = num(a);
        else if (!strcmp(key, "gpm") && g && d == &g->d) g->gpm = num(a);
        else if (!strcmp(key, "gpm_metric") && a && b && d->nmetrics < MAX_METRICS) {
            if (!strcmp(b, "NA")) continue;
            d->metric_id[d->nmetrics] = (unsigned)num(a);
            d->metric_val[d->nmetrics++] = strtod(b, NULL);
        }
        else if (!strcmp(key, "name") && a) { snprintf(d->name, sizeof d->name, "%.95s", whole);
        } else if (!strcmp(key, "util")) { d->util_gpu = num(a); d->util_mem = a && b ? num(b) : NA; }
        else if (!strcmp(key, "mem")) {
            d->mem_total = num(a); d->mem_used = num(b); d->mem_reserved = c ? num(c) : 0;
        } else if (!strcmp(key, "power_mw")) d->power_mw = num(a);
        else if (!strcmp(key, "temp")) d->temp = num(a);
        else if (!strcmp(key, "procs")) d->procs_na = a && !strcmp(a, "NA");
        else if (!strcmp(key, "proc") && a && d->nprocs < MAX_PROCS) {
            d->proc_pid[d->nprocs] = (unsigned)num(a);
            d->proc_used[d->nprocs++] = (!b || !strcmp(b, "NA")) ? ULLONG_MAX : strtoull(b, NULL, 10);
        } else if (!strcmp(key, "mig_mode") && g && d == &g->d) g->mig_mode = num(a);
        else if (!strcmp(key, "lost")) d->fail = E_LOST;
        else if (!strcmp(key, "error")) d->fail = (int)num(a);
    }
    fclose(f);
    return 0;
}

/* Lock, count, reload; resolve a handle to its device (parent lost => MIG lost too). */
#define ENTER(fn) pthread_mutex_lock(&lock); count(fn); int rc_ = begin(); if (rc_) { pthread_mutex_unlock(&lock); return rc_; }
#define RETURN(x) do { int r_ = (x); pthread_mutex_unlock(&lock); return r_; } while (0)
static int begin(void) {
    if (!initialised) return E_UNINIT;
    return load() ? E_UNKNOWN : OK;
}
static int resolve(void *h, dev_t_ **d, gpu_t **g, int *mig) {
    handle_t *p = h;
    if (!p || p < &H[0][0] || p >= &H[MAX_GPUS][0]) return E_INVALID;
    if (p->gpu >= S.ngpus) return E_INVALID;
    gpu_t *gp = &S.g[p->gpu];
    if (p->mig >= gp->nmig) return E_INVALID;
    if (gp->d.fail) return gp->d.fail;
    if (p->mig >= 0 && gp->mig[p->mig].fail) return gp->mig[p->mig].fail;
    if (d) *d = p->mig >= 0 ? &gp->mig[p->mig] : &gp->d;
    if (g) *g = gp;
    if (mig) *mig = p->mig;
    return OK;
}
#define DEV(h) dev_t_ *d; gpu_t *g; int mig; int e_ = resolve(h, &d, &g, &mig); if (e_) RETURN(e_); (void)g; (void)mig;

static int do_init(const char *fn) {
    pthread_mutex_lock(&lock);
    count(fn);
    int rc = load() ? E_DRIVER : S.init_error;
    if (!rc) {
        for (int i = 0; i < MAX_GPUS; i++)
            for (int m = 0; m <= MAX_MIG; m++) H[i][m] = (handle_t){i, m - 1};
        initialised++;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
int nvmlInitWithFlags(unsigned flags) { (void)flags; return do_init("nvmlInitWithFlags"); }
int nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
int nvmlInit(void) { return do_init("nvmlInit"); }
int nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    count("nvmlShutdown");
    int rc = initialised ? (initialised--, OK) : E_UNINIT;
    pthread_mutex_unlock(&lock);
    return rc;
}
const char *nvmlErrorString(int r) {
    switch (r) {
    case OK: return "Success";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_LOST: return "GPU is lost";
    default: return "Fake NVML error";
    }
}
int nvmlSystemGetDriverVersion(char *buf, unsigned len) {
    ENTER("nvmlSystemGetDriverVersion");
    if (strlen(S.driver) >= len) RETURN(E_INSUFFICIENT);
    snprintf(buf, len, "%s", S.driver);
    RETURN(OK);
}
int nvmlDeviceGetCount_v2(unsigned *n) { ENTER("nvmlDeviceGetCount_v2"); *n = (unsigned)S.ngpus; RETURN(OK); }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **out) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (i >= (unsigned)S.ngpus) RETURN(E_INVALID);
    *out = &H[i][0];
    RETURN(OK);
}
static int copy_str(char *buf, unsigned len, const char *s) {
    if (strlen(s) >= len) return E_INSUFFICIENT;
    snprintf(buf, len, "%s", s);
    return OK;
}
int nvmlDeviceGetUUID(void *h, char *buf, unsigned len) { ENTER("nvmlDeviceGetUUID"); DEV(h); RETURN(copy_str(buf, len, d->uuid)); }
int nvmlDeviceGetName(void *h, char *buf, unsigned len) { ENTER("nvmlDeviceGetName"); DEV(h); RETURN(copy_str(buf, len, d->name)); }
int nvmlDeviceGetIndex(void *h, unsigned *i) {
    ENTER("nvmlDeviceGetIndex"); DEV(h);
    if (mig >= 0) RETURN(E_INVALID);
    *i = (unsigned)d->index;
    RETURN(OK);
}
int nvmlDeviceGetUtilizationRates(void *h, unsigned *u) {
    ENTER("nvmlDeviceGetUtilizationRates"); DEV(h);
    if (d->util_gpu == NA || d->util_mem == NA) RETURN(E_NOT_SUPPORTED);
    u[0] = (unsigned)d->util_gpu; u[1] = (unsigned)d->util_mem;
    RETURN(OK);
}
int nvmlDeviceGetMemoryInfo(void *h, unsigned long long *m) {
    ENTER("nvmlDeviceGetMemoryInfo"); DEV(h);
    if (d->mem_total == NA || d->mem_used == NA) RETURN(E_NOT_SUPPORTED);
    unsigned long long used = (unsigned long long)(d->mem_used + d->mem_reserved);
    m[0] = (unsigned long long)d->mem_total; m[1] = m[0] - used; m[2] = used;
    RETURN(OK);
}
int nvmlDeviceGetMemoryInfo_v2(void *h, mem_v2 *m) {
    ENTER("nvmlDeviceGetMemoryInfo_v2");
    if (S.memory_v2_off) RETURN(E_FUNCTION);
    DEV(h);
    if (m->version != 0x02000028) RETURN(E_VERSION);
    if (d->mem_total == NA || d->mem_used == NA) RETURN(E_NOT_SUPPORTED);
    m->total = (unsigned long long)d->mem_total;
    m->reserved = (unsigned long long)d->mem_reserved;
    m->used = (unsigned long long)d->mem_used;
    m->free = m->total - m->reserved - m->used;
    RETURN(OK);
}
int nvmlDeviceGetPowerUsage(void *h, unsigned *mw) {
    ENTER("nvmlDeviceGetPowerUsage"); DEV(h);
    if (d->power_mw == NA) RETURN(E_NOT_SUPPORTED);
    *mw = (unsigned)d->power_mw;
    RETURN(OK);
}
int nvmlDeviceGetTemperature(void *h, int sensor, unsigned *t) {
    ENTER("nvmlDeviceGetTemperature"); DEV(h);
    if (sensor != 0) RETURN(E_INVALID);
    if (d->temp == NA) RETURN(E_NOT_SUPPORTED);
    *t = (unsigned)d->temp;
    RETURN(OK);
}
int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned *n, proc_v3 *out) {
    ENTER("nvmlDeviceGetComputeRunningProcesses_v3"); DEV(h);
    if (d->procs_na) RETURN(E_NOT_SUPPORTED);
    /* A MIG-enabled GPU lists the processes of all its instances, as real NVML does. */
    int k = 0, total = d->nprocs;
    if (mig < 0) for (int m = 0; m < g->nmig; m++) total += g->mig[m].nprocs;
    if (total == 0) { *n = 0; RETURN(OK); }
    if (!out || *n < (unsigned)total) { *n = (unsigned)total; RETURN(E_INSUFFICIENT); }
    for (int m = -1; m < (mig < 0 ? g->nmig : 0); m++) {
        dev_t_ *src = m < 0 ? d : &g->mig[m];
        for (int i = 0; i < src->nprocs; i++, k++)
            out[k] = (proc_v3){src->proc_pid[i], src->proc_used[i],
                               mig >= 0 ? (unsigned)d->gi : m >= 0 ? (unsigned)src->gi : 0xFFFFFFFFu,
                               (mig >= 0 || m >= 0) ? 0 : 0xFFFFFFFFu};
    }
    *n = (unsigned)total;
    RETURN(OK);
}
int nvmlDeviceGetMigMode(void *h, unsigned *cur, unsigned *pending) {
    ENTER("nvmlDeviceGetMigMode"); DEV(h);
    if (mig >= 0 || g->mig_mode == NA) RETURN(E_NOT_SUPPORTED);
    *cur = *pending = (unsigned)g->mig_mode;
    RETURN(OK);
}
int nvmlDeviceGetMaxMigDeviceCount(void *h, unsigned *n) {
    ENTER("nvmlDeviceGetMaxMigDeviceCount"); DEV(h);
    if (mig >= 0 || g->mig_mode == NA) RETURN(E_NOT_SUPPORTED);
    *n = MAX_MIG;
    RETURN(OK);
}
int nvmlDeviceGetMigDeviceHandleByIndex(void *h, unsigned i, void **out) {
    ENTER("nvmlDeviceGetMigDeviceHandleByIndex"); DEV(h);
    if (mig >= 0 || g->mig_mode != 1 || i >= MAX_MIG) RETURN(E_INVALID);
    if (i >= (unsigned)g->nmig) RETURN(E_NOT_FOUND);
    *out = &H[((handle_t *)h)->gpu][i + 1];
    RETURN(OK);
}
int nvmlDeviceIsMigDeviceHandle(void *h, unsigned *is_mig) {
    ENTER("nvmlDeviceIsMigDeviceHandle"); DEV(h);
    *is_mig = mig >= 0;
    RETURN(OK);
}
int nvmlDeviceGetDeviceHandleFromMigDeviceHandle(void *h, void **out) {
    ENTER("nvmlDeviceGetDeviceHandleFromMigDeviceHandle"); DEV(h);
    if (mig < 0) RETURN(E_INVALID);
    *out = &H[((handle_t *)h)->gpu][0];
    RETURN(OK);
}
int nvmlDeviceGetMinorNumber(void *h, unsigned *minor) {
    ENTER("nvmlDeviceGetMinorNumber"); DEV(h);
    if (mig >= 0) RETURN(E_NOT_SUPPORTED);
    if (d->minor == NA) RETURN(E_NOT_SUPPORTED);
    *minor = (unsigned)d->minor;
    RETURN(OK);
}
int nvmlDeviceGetGpuInstanceId(void *h, unsigned *gi) {
    ENTER("nvmlDeviceGetGpuInstanceId"); DEV(h);
    if (mig < 0) RETURN(E_NOT_SUPPORTED);
    *gi = (unsigned)d->gi;
    RETURN(OK);
}

/* ---- GPM ---- */
int nvmlGpmQueryDeviceSupport(void *h, gpm_support_t *s) {
    ENTER("nvmlGpmQueryDeviceSupport"); DEV(h);
    if (!s) RETURN(E_INVALID);
    if (s->version != 1) RETURN(E_VERSION);
    if (g->gpm == NA) RETURN(E_NOT_SUPPORTED);
    s->supported = g->gpm == 1;
    RETURN(OK);
}
int nvmlGpmSampleAlloc(gpm_sample_t **out) {
    ENTER("nvmlGpmSampleAlloc");
    if (!out) RETURN(E_INVALID);
    gpm_sample_t *s = calloc(1, sizeof *s);
    if (!s) RETURN(E_UNKNOWN);
    s->magic = GPM_MAGIC;
    gpm_live++;
    *out = s;
    RETURN(OK);
}
int nvmlGpmSampleFree(gpm_sample_t *s) {
    ENTER("nvmlGpmSampleFree");
    if (!s || s->magic != GPM_MAGIC) RETURN(E_INVALID);
    s->magic = 0;
    free(s);
    gpm_live--;
    RETURN(OK);
}
static void snapshot(gpm_sample_t *s, const dev_t_ *d, int gpu, int slot) {
    gpm_totals_t *t = &gpm_totals[gpu][slot];
    t->count++;
    memset(s->present, 0, sizeof s->present);
    for (int k = 0; k < d->nmetrics; k++)
        if (d->metric_id[k] < METRIC_IDS) {
            /* A non-finite value (a driver fault) is returned as is and kept out of the totals. */
            int finite = isfinite(d->metric_val[k]);
            if (finite) t->sum[d->metric_id[k]] += d->metric_val[k];
            s->present[d->metric_id[k]] = finite ? 1 : 2;
        }
    s->filled = 1; s->gpu = gpu; s->slot = slot; s->stamp = ++gpm_clock;
    s->totals = *t;
}
int nvmlGpmSampleGet(void *h, gpm_sample_t *s) {
    ENTER("nvmlGpmSampleGet"); DEV(h);
    if (!s || s->magic != GPM_MAGIC) RETURN(E_INVALID);
    if (mig >= 0 || g->gpm != 1) RETURN(E_NOT_SUPPORTED);
    snapshot(s, d, ((handle_t *)h)->gpu, 0);
    RETURN(OK);
}
int nvmlGpmMigSampleGet(void *h, unsigned gi, gpm_sample_t *s) {
    ENTER("nvmlGpmMigSampleGet"); DEV(h);
    if (!s || s->magic != GPM_MAGIC || mig >= 0) RETURN(E_INVALID);
    if (g->gpm != 1 || g->mig_mode != 1) RETURN(E_NOT_SUPPORTED);
    for (int m = 0; m < g->nmig; m++) {
        if (g->mig[m].gi != (long long)gi) continue;
        if (g->mig[m].fail) RETURN(g->mig[m].fail);
        snapshot(s, &g->mig[m], ((handle_t *)h)->gpu, m + 1);
        RETURN(OK);
    }
    RETURN(E_NOT_FOUND);
}
int nvmlGpmMetricsGet(gpm_metrics_get_t *m) {
    ENTER("nvmlGpmMetricsGet");
    if (!m) RETURN(E_INVALID);
    if (m->version != 1) RETURN(E_VERSION);
    gpm_sample_t *a = m->sample1, *b = m->sample2;
    if (m->count > MAX_GPM_REQUEST || !a || !b) RETURN(E_INVALID);
    if (a->magic != GPM_MAGIC || b->magic != GPM_MAGIC || !a->filled || !b->filled) RETURN(E_INVALID);
    if (a->gpu != b->gpu || a->slot != b->slot || b->stamp <= a->stamp) RETURN(E_INVALID);
    double n = (double)(b->totals.count - a->totals.count);
    for (unsigned i = 0; i < m->count; i++) {
        gpm_metric_t *out = &m->metrics[i];
        unsigned id = out->id;
        int ok = id < METRIC_IDS && b->present[id];
        out->ret = ok ? OK : E_NOT_SUPPORTED;
        out->value = !ok ? 0.0 : b->present[id] == 2 ? NAN : (b->totals.sum[id] - a->totals.sum[id]) / n;
        out->info = (metric_info_t){NULL, NULL, NULL};
    }
    RETURN(OK);
}
