/* zreq: closed-loop request/reply load: N REQ clients, every round trip timed.
 *
 *   zreq --connect ENDPOINT [--clients N] (--duration SECS | --count N)
 *        [--size B] [--topic T] [--frames 1|2] [--warmup SECS]
 *        [--timeout-ms MS] [--startup-timeout-ms MS] [--io-threads N]
 *
 * ENDPOINT is "tcp://HOST:PORT" (or ">tcp://...", as in the other load
 * programs; several may be joined with commas). Each client is a thread
 * with its own REQ socket that sends one request, waits for its reply, and
 * sends the next (one request in flight per client). A request is
 * [topic][payload] (--frames 2, the default) or [payload] (--frames 1);
 * the payload is --size bytes ending in a sequence number unique to the
 * client and the request (common.h), which the service echoes.
 *
 * Phases, all clients together:
 *   1. startup: each client sends until one good reply comes back, so the
 *      whole path is up (an error reply, e.g. "no service connected yet",
 *      is retried every 10 ms) - at most --startup-timeout-ms (30 s);
 *   2. warm-up: --warmup seconds (default 1) of round trips, not measured;
 *   3. measurement: --duration seconds, or until --count round trips (all
 *      clients together) have completed.
 *
 * A reply is good when its last frame equals the request's payload, byte
 * for byte (so the sequence number matches). Errors, counted separately:
 *   error_replies  the first frame is "switchyard.error" (the router's
 *                  error reply: that frame, then a JSON body);
 *   mismatches     anything else that is not the payload sent;
 *   timeouts       no reply within --timeout-ms (default 10000). The REQ
 *                  socket is closed and a new one connected: a REQ socket
 *                  that never got its reply cannot send again.
 *
 * Prints one JSON line: clients, round_trips (good replies in the
 * measurement), seconds (start of the measurement to its last reply), rate
 * (round_trips / seconds), p50/p90/p99/max/mean round-trip time in
 * microseconds over the good replies, errors (the sum of the three kinds)
 * and each kind, and first_error (the first error reply's body, if any).
 * Exit status 0 when the measurement ran (look at "errors"), 3 when the
 * path never came up (the JSON line then holds "error"), 2 on bad usage.
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define ERROR_FRAME "switchyard.error"

static void usage(void)
{
    fprintf(stderr,
            "usage: zreq --connect ENDPOINT [--clients N] (--duration SECS | --count N) "
            "[--size B] [--topic T] [--frames 1|2] [--warmup SECS] [--timeout-ms MS] "
            "[--startup-timeout-ms MS] [--io-threads N]\n");
    exit(2);
}

/* Settings, shared read-only by every client. */
static const char *g_endpoint;
static const char *g_topic = "bench.rpc";
static long long g_size = 64, g_frames = 2, g_timeout_ms = 10000, g_startup_ms = 30000;
static long long g_count = -1; /* total measured round trips, or -1: --duration */
static double g_duration = -1, g_warmup = 1.0;
static void *g_ctx;
static size_t g_last_cap; /* reply buffer: the payload, or an error body up to 1 KiB */

/* Phase boundaries, written by main between the two barriers. */
static pthread_barrier_t g_ready, g_go;
static uint64_t g_measure_start, g_measure_end; /* ns; end is UINT64_MAX with --count */
static atomic_llong g_tickets;                  /* --count: measured round trips claimed */

typedef struct {
    int id;
    int up; /* startup got a good reply */
    char startup_error[256];
    /* Measurement results. */
    uint64_t *samples; /* round-trip ns of good replies */
    size_t n, cap;
    long long timeouts, error_replies, mismatches, warmup;
    uint64_t last_done; /* ns of the last completed round trip */
    char first_error[512];
} Client;

typedef enum { RT_OK, RT_ERROR_REPLY, RT_MISMATCH, RT_TIMEOUT } Outcome;

static void *new_req(void)
{
    void *s = zmq_socket(g_ctx, ZMQ_REQ);
    if (s == NULL)
        DIE("zmq_socket(REQ): %s", zmq_strerror(zmq_errno()));
    set_int(s, ZMQ_LINGER, 0, "ZMQ_LINGER");
    set_int(s, ZMQ_RCVTIMEO, (int)g_timeout_ms, "ZMQ_RCVTIMEO");
    set_int(s, ZMQ_SNDTIMEO, (int)g_timeout_ms, "ZMQ_SNDTIMEO");
    char *copy = strdup(g_endpoint);
    char *save = NULL;
    if (copy == NULL)
        DIE("out of memory");
    for (char *ep = strtok_r(copy, ",", &save); ep != NULL; ep = strtok_r(NULL, ",", &save)) {
        const char *addr = ep[0] == '>' ? ep + 1 : ep;
        if (zmq_connect(s, addr) != 0)
            DIE("connect %s: %s", addr, zmq_strerror(zmq_errno()));
    }
    free(copy);
    return s;
}

/* Receives one whole reply. Returns the number of frames (the first in
 * `first`, the last in `last`; each truncated to its buffer, real lengths
 * in *first_len / *last_len), or -1 on timeout. */
static int recv_reply(void *s, unsigned char *first, size_t first_cap, int *first_len,
                      unsigned char *last, size_t last_cap, int *last_len)
{
    int frames = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        size_t len = zmq_msg_size(&m);
        const unsigned char *data = zmq_msg_data(&m);
        if (frames == 0) {
            memcpy(first, data, len < first_cap ? len : first_cap);
            *first_len = (int)len;
        }
        memcpy(last, data, len < last_cap ? len : last_cap);
        *last_len = (int)len;
        frames++;
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more)
            return frames;
    }
}

/* One request and its reply. On RT_ERROR_REPLY, `why` gets the reply's
 * second frame (the error body). */
static Outcome round_trip(void **sock, const unsigned char *payload, unsigned char *first,
                          unsigned char *last, char *why, size_t why_cap)
{
    size_t tlen = strlen(g_topic);
    int rc = 0;
    if (g_frames == 2)
        rc = zmq_send(*sock, g_topic, tlen, ZMQ_SNDMORE);
    if (rc >= 0)
        rc = zmq_send(*sock, payload, (size_t)g_size, 0);
    int first_len = 0, last_len = 0, frames = -1;
    if (rc >= 0)
        frames = recv_reply(*sock, first, 64, &first_len, last, g_last_cap, &last_len);
    if (frames < 0) {
        /* A REQ socket waiting for a reply refuses to send: start over. */
        zmq_close(*sock);
        *sock = new_req();
        return RT_TIMEOUT;
    }
    if (first_len == (int)strlen(ERROR_FRAME) && memcmp(first, ERROR_FRAME, strlen(ERROR_FRAME)) == 0) {
        if (why != NULL && why_cap > 0) {
            size_t n = frames >= 2 && last_len > 0 ? (size_t)last_len : 0;
            if (n > g_last_cap)
                n = g_last_cap;
            if (n >= why_cap)
                n = why_cap - 1;
            memcpy(why, last, n);
            why[n] = '\0';
        }
        return RT_ERROR_REPLY;
    }
    if (last_len != (int)g_size || memcmp(last, payload, (size_t)g_size) != 0)
        return RT_MISMATCH;
    return RT_OK;
}

static void record(Client *c, uint64_t ns)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 65536;
        c->samples = realloc(c->samples, c->cap * sizeof *c->samples);
        if (c->samples == NULL)
            DIE("out of memory");
    }
    c->samples[c->n++] = ns;
}

static void *client_main(void *arg)
{
    Client *c = arg;
    unsigned char *payload = malloc((size_t)g_size);
    unsigned char *last = malloc(g_last_cap);
    unsigned char first[64];
    if (payload == NULL || last == NULL)
        DIE("out of memory");
    memset(payload, 'x', (size_t)g_size);
    unsigned char *seqp = payload + g_size - 8;
    uint64_t seq = (uint64_t)c->id << 40;
    void *sock = new_req();

    /* 1. Startup: until one good reply. */
    uint64_t give_up = now_ns() + (uint64_t)g_startup_ms * 1000000ull;
    char why[256] = "";
    for (;;) {
        /* Never wait past the startup deadline for one reply. */
        uint64_t now = now_ns();
        long long left_ms = now < give_up ? (long long)((give_up - now) / 1000000ull) + 1 : 1;
        set_int(sock, ZMQ_RCVTIMEO, (int)(left_ms < g_timeout_ms ? left_ms : g_timeout_ms),
                "ZMQ_RCVTIMEO");
        put_seq(seqp, ++seq);
        Outcome o = round_trip(&sock, payload, first, last, why, sizeof why);
        if (o == RT_OK) {
            c->up = 1;
            set_int(sock, ZMQ_RCVTIMEO, (int)g_timeout_ms, "ZMQ_RCVTIMEO");
            break;
        }
        if (now_ns() >= give_up) {
            snprintf(c->startup_error, sizeof c->startup_error, "client %d: %s%s", c->id,
                     o == RT_TIMEOUT      ? "no reply within the timeout"
                     : o == RT_MISMATCH   ? "replies do not echo the request"
                                          : "error reply: ",
                     o == RT_ERROR_REPLY ? why : "");
            break;
        }
        if (o != RT_TIMEOUT)
            sleep_until_ns(now_ns() + 10000000ull);
    }
    pthread_barrier_wait(&g_ready);
    pthread_barrier_wait(&g_go);
    if (g_measure_start == 0) { /* some client never came up: main reports it */
        zmq_close(sock);
        free(payload);
        free(last);
        return NULL;
    }

    /* 2 and 3. Warm-up, then the measurement. */
    for (;;) {
        uint64_t t0 = now_ns();
        int measured = t0 >= g_measure_start;
        if (measured) {
            if (t0 >= g_measure_end)
                break;
            if (g_count > 0 && atomic_fetch_add(&g_tickets, 1) >= g_count)
                break;
        }
        put_seq(seqp, ++seq);
        Outcome o = round_trip(&sock, payload, first, last, why, sizeof why);
        uint64_t t1 = now_ns();
        if (!measured) {
            c->warmup++;
            continue;
        }
        c->last_done = t1;
        switch (o) {
        case RT_OK:
            record(c, t1 - t0);
            break;
        case RT_ERROR_REPLY:
            if (c->error_replies++ == 0)
                snprintf(c->first_error, sizeof c->first_error, "%s", why);
            break;
        case RT_MISMATCH:
            c->mismatches++;
            break;
        case RT_TIMEOUT:
            c->timeouts++;
            break;
        }
    }
    zmq_close(sock);
    free(payload);
    free(last);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Prints `s` as a JSON string, pure ASCII: a byte outside it (the body may
 * be cut inside a UTF-8 sequence) becomes \u00XX, so the line always parses. */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    long long clients = 1, io_threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--connect"))
            g_endpoint = v;
        else if (FLAG("--clients"))
            clients = parse_num(a, v);
        else if (FLAG("--duration"))
            g_duration = atof(v);
        else if (FLAG("--count"))
            g_count = parse_num(a, v);
        else if (FLAG("--size"))
            g_size = parse_num(a, v);
        else if (FLAG("--topic"))
            g_topic = v;
        else if (FLAG("--frames"))
            g_frames = parse_num(a, v);
        else if (FLAG("--warmup"))
            g_warmup = atof(v);
        else if (FLAG("--timeout-ms"))
            g_timeout_ms = parse_num(a, v);
        else if (FLAG("--startup-timeout-ms"))
            g_startup_ms = parse_num(a, v);
        else if (FLAG("--io-threads"))
            io_threads = parse_num(a, v);
        else
            usage();
#undef FLAG
    }
    if (g_endpoint == NULL || clients < 1 || clients > 4096 || g_size < 8
        || (g_frames != 1 && g_frames != 2) || g_warmup < 0 || g_timeout_ms < 1
        || g_startup_ms < 1 || io_threads < 1 || ((g_duration > 0) == (g_count > 0)))
        usage();

    g_last_cap = (size_t)g_size + 1024;
    g_ctx = zmq_ctx_new();
    if (zmq_ctx_set(g_ctx, ZMQ_IO_THREADS, (int)io_threads) != 0)
        DIE("ZMQ_IO_THREADS=%lld: %s", io_threads, zmq_strerror(zmq_errno()));
    Client *cs = calloc((size_t)clients, sizeof *cs);
    pthread_t *tids = calloc((size_t)clients, sizeof *tids);
    if (cs == NULL || tids == NULL)
        DIE("out of memory");
    pthread_barrier_init(&g_ready, NULL, (unsigned)clients + 1);
    pthread_barrier_init(&g_go, NULL, (unsigned)clients + 1);
    for (long long i = 0; i < clients; i++) {
        cs[i].id = (int)i;
        if (pthread_create(&tids[i], NULL, client_main, &cs[i]) != 0)
            DIE("pthread_create failed");
    }
    pthread_barrier_wait(&g_ready);
    const char *down = NULL;
    for (long long i = 0; i < clients && down == NULL; i++)
        if (!cs[i].up)
            down = cs[i].startup_error;
    if (down == NULL) {
        g_measure_start = now_ns() + (uint64_t)(g_warmup * 1e9);
        g_measure_end = g_count > 0 ? UINT64_MAX : g_measure_start + (uint64_t)(g_duration * 1e9);
    }
    pthread_barrier_wait(&g_go);
    for (long long i = 0; i < clients; i++)
        pthread_join(tids[i], NULL);
    if (down != NULL) {
        printf("{\"clients\":%lld,\"error\":", clients);
        json_str(down);
        printf("}\n");
        return 3;
    }

    size_t total = 0;
    long long timeouts = 0, error_replies = 0, mismatches = 0, warmup = 0;
    uint64_t end = g_measure_start;
    const char *first_error = "";
    for (long long i = 0; i < clients; i++) {
        total += cs[i].n;
        timeouts += cs[i].timeouts;
        error_replies += cs[i].error_replies;
        mismatches += cs[i].mismatches;
        warmup += cs[i].warmup;
        if (cs[i].last_done > end)
            end = cs[i].last_done;
        if (first_error[0] == '\0' && cs[i].first_error[0] != '\0')
            first_error = cs[i].first_error;
    }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    if (all == NULL)
        DIE("out of memory");
    size_t k = 0;
    double sum = 0;
    for (long long i = 0; i < clients; i++) {
        for (size_t j = 0; j < cs[i].n; j++) {
            all[k++] = cs[i].samples[j];
            sum += (double)cs[i].samples[j];
        }
        free(cs[i].samples);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    double secs = (double)(end - g_measure_start) / 1e9;
#define PCT(p) (total ? (double)all[(size_t)((double)(total - 1) * (p))] / 1000.0 : 0.0)
    printf("{\"clients\":%lld,\"round_trips\":%zu,\"seconds\":%.3f,\"rate\":%.1f,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f,"
           "\"errors\":%lld,\"timeouts\":%lld,\"error_replies\":%lld,\"mismatches\":%lld,"
           "\"warmup_round_trips\":%lld,\"size\":%lld,\"frames\":%lld,\"first_error\":",
           clients, total, secs, secs > 0 ? (double)total / secs : 0.0, PCT(0.50), PCT(0.90),
           PCT(0.99), total ? (double)all[total - 1] / 1000.0 : 0.0,
           total ? sum / (double)total / 1000.0 : 0.0, timeouts + error_replies + mismatches,
           timeouts, error_replies, mismatches, warmup, g_size, g_frames);
#undef PCT
    json_str(first_error);
    printf("}\n");
    free(all);
    free(cs);
    free(tids);
    zmq_ctx_term(g_ctx);
    return 0;
}
