/* zlat: single-message latency through a forwarder under light traffic.
 *
 *   zlat --in >tcp://HOST:PORT --out >tcp://HOST:PORT --count N
 *        [--gap-us N] [--size B] [--topic T] [--prefix TEXT] [--warmup N]
 *
 * A PUB socket connected to --in sends one two-frame message
 * [topic][payload] at a time; a SUB socket connected to --out (subscribed
 * to the topic) waits for it before the next one is sent, --gap-us later.
 * The payload starts with --prefix and ends in the sequence number. The
 * first --warmup messages (default 100) are not measured; until one comes
 * through, messages are re-sent every 10 ms (subscriptions propagate).
 * Prints one JSON line: count, p50, p90, p99, max and mean in microseconds.
 * A message not back within 1 s counts as lost and ends the run (exit 3).
 */
#include "common.h"

static void usage(void)
{
    fprintf(stderr, "usage: zlat --in SPEC --out SPEC --count N [--gap-us N] [--size B] "
                    "[--topic T] [--prefix TEXT] [--warmup N]\n");
    exit(2);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Waits up to `timeout_ms` for the message numbered `want`; 1 if it came. */
static int await_seq(void *sub, unsigned char *buf, size_t cap, uint64_t want, int timeout_ms)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline)
            return 0;
        zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
        int left_ms = (int)((deadline - now) / 1000000ull) + 1;
        if (zmq_poll(&item, 1, left_ms) <= 0)
            continue;
        /* Topic frame, then payload. */
        zmq_recv(sub, buf, cap, 0);
        int more = 0;
        size_t more_len = sizeof more;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &more_len);
        if (!more)
            continue;
        int n = zmq_recv(sub, buf, cap, 0);
        if (n >= 8 && get_seq(buf + n - 8) == want)
            return 1;
    }
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *topic = "bench.data", *prefix = "";
    long long count = -1, gap_us = 1000, size = 64, warmup = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--in"))
            in = v;
        else if (FLAG("--out"))
            out = v;
        else if (FLAG("--count"))
            count = parse_num(a, v);
        else if (FLAG("--gap-us"))
            gap_us = parse_num(a, v);
        else if (FLAG("--size"))
            size = parse_num(a, v);
        else if (FLAG("--topic"))
            topic = v;
        else if (FLAG("--prefix"))
            prefix = v;
        else if (FLAG("--warmup"))
            warmup = parse_num(a, v);
        else
            usage();
#undef FLAG
    }
    if (in == NULL || out == NULL || count <= 0 || size < 8 || strlen(prefix) + 8 > (size_t)size)
        usage();

    void *ctx = zmq_ctx_new();
    void *pub = zmq_socket(ctx, ZMQ_PUB);
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    set_int(pub, ZMQ_LINGER, 0, "ZMQ_LINGER");
    set_int(sub, ZMQ_LINGER, 0, "ZMQ_LINGER");
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic, strlen(topic));
    attach(sub, out);
    attach(pub, in);

    unsigned char *payload = calloc(1, (size_t)size);
    unsigned char *buf = calloc(1, (size_t)size + 4096);
    uint64_t *samples = calloc((size_t)count, sizeof *samples);
    if (payload == NULL || buf == NULL || samples == NULL)
        DIE("out of memory");
    memset(payload, 'x', (size_t)size);
    memcpy(payload, prefix, strlen(prefix));
    unsigned char *seqp = payload + size - 8;

    /* Until the path is up, re-send the first message every 10 ms. */
    put_seq(seqp, 0);
    uint64_t give_up = now_ns() + 30ull * 1000000000ull;
    for (;;) {
        zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE);
        zmq_send(pub, payload, (size_t)size, 0);
        if (await_seq(sub, buf, (size_t)size + 4096, 0, 10))
            break;
        if (now_ns() > give_up)
            DIE("no message came through within 30 s");
    }

    long long total = warmup + count;
    for (long long i = 1; i <= total; i++) {
        sleep_until_ns(now_ns() + (uint64_t)gap_us * 1000ull);
        put_seq(seqp, (uint64_t)i);
        uint64_t t0 = now_ns();
        zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE);
        zmq_send(pub, payload, (size_t)size, 0);
        if (!await_seq(sub, buf, (size_t)size + 4096, (uint64_t)i, 1000)) {
            printf("{\"error\":\"message %lld not back within 1 s\"}\n", i);
            return 3;
        }
        if (i > warmup)
            samples[i - warmup - 1] = now_ns() - t0;
    }
    qsort(samples, (size_t)count, sizeof *samples, cmp_u64);
    double sum = 0;
    for (long long i = 0; i < count; i++)
        sum += (double)samples[i];
#define PCT(p) ((double)samples[(size_t)((double)(count - 1) * (p))] / 1000.0)
    printf("{\"count\":%lld,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
           "\"mean_us\":%.1f}\n",
           count, PCT(0.50), PCT(0.90), PCT(0.99), (double)samples[count - 1] / 1000.0,
           sum / (double)count / 1000.0);
#undef PCT
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return 0;
}
