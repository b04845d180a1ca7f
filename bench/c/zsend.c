/* zsend: a paced ZeroMQ publisher/pusher for throughput benchmarks.
 *
 *   zsend --type pub|push --endpoint SPEC --rate N --size B --count N
 *         [--topic T] [--frames 1|2] [--sndhwm N] [--sndbuf N]
 *         [--sync SPEC] [--sync-timeout-ms N] [--linger-ms N]
 *         [--payload-prefix TEXT] [--first N]
 *         [--curve-secret Z85 --curve-server-key Z85]
 *
 * --rate 0 sends as fast as the socket accepts. A paced sender sends message
 * i at start + i/rate (sleeping when ahead by more than --burst-us), so a
 * slow consumer shows up as loss (PUB drops at the high-water mark) or as an
 * achieved rate below the target (PUSH blocks at the high-water mark).
 *
 * --frames 1: one frame of --size bytes, "topic" + padding + seq.
 * --frames 2: [topic][payload of --size bytes ending in seq]; with
 * --payload-prefix the payload starts with TEXT (e.g. a JSON document's
 * opening, so a JSON-field filter finds its field before the padding).
 * --first N: the first sequence number (default 0), so that several runs
 * into one queue carry distinct numbers.
 *
 * --sync SPEC: before measuring, send probes every 10 ms until the receiver
 * reports (over a PULL socket at SPEC) that a probe came through, i.e. the
 * path and its subscriptions are up. Prints one JSON line on stdout.
 */
#include "common.h"

#include <sys/prctl.h>

static void usage(void)
{
    fprintf(stderr, "usage: zsend --type pub|push --endpoint @bind|>connect --rate N --size B "
                    "--count N [--topic T] [--frames 1|2] [--sndhwm N] [--sndbuf N] "
                    "[--sync SPEC] [--sync-timeout-ms N] [--linger-ms N] [--burst-us N] [--first N] "
                    "[--payload-prefix TEXT] [--curve-secret Z85 --curve-server-key Z85]\n");
    exit(2);
}

/* Sends one message (1 or 2 frames). Returns 0, or -1 with errno (EAGAIN). */
static int send_msg(void *sock, int frames, const char *topic, size_t topic_len,
                    const unsigned char *buf, size_t size, int flags)
{
    if (frames == 2) {
        if (zmq_send(sock, topic, topic_len, flags | ZMQ_SNDMORE) < 0)
            return -1;
        /* Once the first frame is queued the rest of the message is too. */
        flags &= ~ZMQ_DONTWAIT;
    }
    if (zmq_send(sock, buf, size, flags) < 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *type = NULL, *endpoint = NULL, *topic = "", *sync_spec = NULL, *prefix = "";
    long long rate = -1, size = 64, count = -1, frames = 1;
    long long sndhwm = -1, sndbuf = -1, sync_timeout_ms = 30000, linger_ms = 30000;
    long long burst_us = 100, first = 0;
    const char *curve_secret = NULL, *curve_server_key = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--type"))
            type = v;
        else if (FLAG("--endpoint"))
            endpoint = v;
        else if (FLAG("--rate"))
            rate = parse_num(a, v);
        else if (FLAG("--size"))
            size = parse_num(a, v);
        else if (FLAG("--count"))
            count = parse_num(a, v);
        else if (FLAG("--topic"))
            topic = v;
        else if (FLAG("--frames"))
            frames = parse_num(a, v);
        else if (FLAG("--sndhwm"))
            sndhwm = parse_num(a, v);
        else if (FLAG("--sndbuf"))
            sndbuf = parse_num(a, v);
        else if (FLAG("--sync"))
            sync_spec = v;
        else if (FLAG("--sync-timeout-ms"))
            sync_timeout_ms = parse_num(a, v);
        else if (FLAG("--linger-ms"))
            linger_ms = parse_num(a, v);
        else if (FLAG("--burst-us"))
            burst_us = parse_num(a, v);
        else if (FLAG("--first"))
            first = parse_num(a, v);
        else if (FLAG("--payload-prefix"))
            prefix = v;
        else if (FLAG("--curve-secret"))
            curve_secret = v;
        else if (FLAG("--curve-server-key"))
            curve_server_key = v;
        else
            usage();
#undef FLAG
    }
    if (type == NULL || endpoint == NULL || rate < 0 || count < 0 || (frames != 1 && frames != 2))
        usage();
    int socktype;
    if (strcmp(type, "pub") == 0)
        socktype = ZMQ_PUB;
    else if (strcmp(type, "push") == 0)
        socktype = ZMQ_PUSH;
    else
        usage();
    size_t topic_len = strlen(topic);
    if (size < 8 || (frames == 1 && (size_t)size < topic_len + 8))
        DIE("--size must hold the sequence number (8 bytes) and, with --frames 1, the topic");

    /* Wake-ups at the requested time, not up to 50 us later. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, socktype);
    if (sock == NULL)
        DIE("zmq_socket: %s", zmq_strerror(zmq_errno()));
    set_opts(sock, (int)sndhwm, -1, (int)sndbuf, -1);
    set_int(sock, ZMQ_LINGER, (int)linger_ms, "ZMQ_LINGER");
    curve_client(sock, curve_secret, curve_server_key);
    attach(sock, endpoint);

    unsigned char *buf = calloc(1, (size_t)size);
    if (buf == NULL)
        DIE("out of memory");
    memset(buf, 'x', (size_t)size);
    if (frames == 1)
        memcpy(buf, topic, topic_len);
    else if (strlen(prefix) > 0) {
        if (strlen(prefix) + 8 > (size_t)size)
            DIE("--payload-prefix and the sequence number must fit in --size");
        memcpy(buf, prefix, strlen(prefix));
    }
    unsigned char *seqp = buf + size - 8;

    long long probes = 0;
    if (sync_spec != NULL) {
        void *sync = zmq_socket(ctx, ZMQ_PULL);
        set_int(sync, ZMQ_LINGER, 0, "ZMQ_LINGER");
        attach(sync, sync_spec);
        put_seq(seqp, PROBE_SEQ);
        uint64_t deadline = now_ns() + (uint64_t)sync_timeout_ms * 1000000ull;
        for (;;) {
            if (send_msg(sock, (int)frames, topic, topic_len, buf, (size_t)size, ZMQ_DONTWAIT) == 0)
                probes++;
            zmq_pollitem_t item = {sync, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, 10) > 0) {
                char ack[16];
                zmq_recv(sync, ack, sizeof ack, 0);
                break;
            }
            if (now_ns() > deadline) {
                printf("{\"role\":\"send\",\"error\":\"sync timeout\",\"probes\":%lld}\n", probes);
                fflush(stdout);
                set_int(sock, ZMQ_LINGER, 0, "ZMQ_LINGER");
                zmq_close(sync);
                zmq_close(sock);
                zmq_ctx_term(ctx);
                return 3;
            }
        }
        zmq_close(sync);
    }

    uint64_t start = now_ns();
    uint64_t burst_ns = (uint64_t)burst_us * 1000ull;
    double interval_ns = rate > 0 ? 1e9 / (double)rate : 0.0;
    long long sent = 0;
    for (long long i = 0; i < count; i++) {
        if (rate > 0) {
            uint64_t due = start + (uint64_t)((double)i * interval_ns);
            uint64_t now = now_ns();
            if (due > now + burst_ns)
                sleep_until_ns(due - burst_ns);
        }
        put_seq(seqp, (uint64_t)(first + i));
        if (send_msg(sock, (int)frames, topic, topic_len, buf, (size_t)size, 0) != 0)
            DIE("zmq_send: %s", zmq_strerror(zmq_errno()));
        sent++;
    }
    uint64_t end = now_ns();
    double elapsed = (double)(end - start) / 1e9;
    printf("{\"role\":\"send\",\"type\":\"%s\",\"sent\":%lld,\"size\":%lld,\"frames\":%lld,"
           "\"target_rate\":%lld,\"elapsed_s\":%.6f,\"achieved_rate\":%.1f,\"probes\":%lld}\n",
           type, sent, size, frames, rate, elapsed, elapsed > 0 ? (double)sent / elapsed : 0.0,
           probes);
    fflush(stdout);

    zmq_close(sock); /* lingers up to --linger-ms to flush what is queued */
    zmq_ctx_term(ctx);
    free(buf);
    return 0;
}
