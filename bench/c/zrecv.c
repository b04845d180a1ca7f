/* zrecv: a counting ZeroMQ subscriber/puller for throughput benchmarks.
 *
 *   zrecv --type sub|pull --endpoint SPEC --count N [--subscribe PREFIX]...
 *         [--rcvhwm N] [--rcvbuf N] [--sync SPEC] [--idle-ms N] [--timeout-ms N]
 *
 * Counts data messages, reads the sequence number from the last 8 bytes of
 * each message's last frame (see common.h), and reports received, lost
 * (expected - distinct received), gaps, duplicates/reorders, elapsed time
 * (first to last data message) and messages/s as one JSON line on stdout.
 *
 * Stops when all --count messages arrived, when no message came for --idle-ms
 * after the first one, or after --timeout-ms in total. With --sync SPEC it
 * connects a PUSH socket there and sends "ready" when the first probe arrives.
 * A SUB with no --subscribe subscribes to everything.
 */
#include "common.h"

static void usage(void)
{
    fprintf(stderr, "usage: zrecv --type sub|pull --endpoint @bind|>connect --count N "
                    "[--subscribe PREFIX]... [--rcvhwm N] [--rcvbuf N] [--sync SPEC] "
                    "[--idle-ms N] [--timeout-ms N] [--curve-secret Z85 --curve-server-key Z85]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *type = NULL, *endpoint = NULL, *sync_spec = NULL;
    const char *subs[64];
    int nsubs = 0;
    long long count = -1, rcvhwm = -1, rcvbuf = -1, idle_ms = 2000, timeout_ms = 120000;
    const char *curve_secret = NULL, *curve_server_key = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--type"))
            type = v;
        else if (FLAG("--endpoint"))
            endpoint = v;
        else if (FLAG("--count"))
            count = parse_num(a, v);
        else if (FLAG("--subscribe")) {
            if (nsubs == 64)
                DIE("too many --subscribe");
            subs[nsubs++] = v;
        } else if (FLAG("--rcvhwm"))
            rcvhwm = parse_num(a, v);
        else if (FLAG("--rcvbuf"))
            rcvbuf = parse_num(a, v);
        else if (FLAG("--sync"))
            sync_spec = v;
        else if (FLAG("--idle-ms"))
            idle_ms = parse_num(a, v);
        else if (FLAG("--timeout-ms"))
            timeout_ms = parse_num(a, v);
        else if (FLAG("--curve-secret"))
            curve_secret = v;
        else if (FLAG("--curve-server-key"))
            curve_server_key = v;
        else
            usage();
#undef FLAG
    }
    if (type == NULL || endpoint == NULL || count < 0)
        usage();
    int socktype;
    if (strcmp(type, "sub") == 0)
        socktype = ZMQ_SUB;
    else if (strcmp(type, "pull") == 0)
        socktype = ZMQ_PULL;
    else
        usage();

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, socktype);
    if (sock == NULL)
        DIE("zmq_socket: %s", zmq_strerror(zmq_errno()));
    set_opts(sock, -1, (int)rcvhwm, -1, (int)rcvbuf);
    set_int(sock, ZMQ_LINGER, 0, "ZMQ_LINGER");
    curve_client(sock, curve_secret, curve_server_key);
    if (socktype == ZMQ_SUB) {
        if (nsubs == 0)
            subs[nsubs++] = "";
        for (int s = 0; s < nsubs; s++)
            if (zmq_setsockopt(sock, ZMQ_SUBSCRIBE, subs[s], strlen(subs[s])) != 0)
                DIE("subscribe: %s", zmq_strerror(zmq_errno()));
    }
    attach(sock, endpoint);

    void *sync = NULL;
    if (sync_spec != NULL) {
        sync = zmq_socket(ctx, ZMQ_PUSH);
        set_int(sync, ZMQ_LINGER, 5000, "ZMQ_LINGER");
        attach(sync, sync_spec);
    }

    /* One bit per expected sequence number: exact distinct counts. */
    size_t nbytes = (size_t)count / 8 + 1;
    unsigned char *seen = calloc(nbytes, 1);
    if (seen == NULL)
        DIE("out of memory");

    long long received = 0, distinct = 0, dups = 0, reorders = 0, gaps = 0, probes = 0;
    long long out_of_range = 0, frames_total = 0, bytes_total = 0;
    uint64_t next = 0;
    uint64_t t_start = now_ns(), t_first = 0, t_last = 0;
    int timed_out = 0, synced = 0;
    zmq_msg_t msg;
    zmq_msg_init(&msg);

    while (distinct < count) {
        long wait_ms;
        uint64_t now = now_ns();
        if (received == 0) {
            long long left = timeout_ms - (long long)((now - t_start) / 1000000ull);
            if (left <= 0) {
                timed_out = 1;
                break;
            }
            wait_ms = (long)left;
        } else {
            wait_ms = (long)idle_ms;
        }
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, wait_ms);
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            DIE("zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (rc == 0) {
            if (received == 0)
                continue; /* the total deadline is checked at the top */
            break; /* idle after data: the stream is over (or lost) */
        }
        /* Drain everything that is ready without polling again. */
        for (;;) {
            int more = 1, nframes = 0;
            int64_t last_size = 0;
            unsigned char tail[8];
            while (more) {
                if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
                    if (zmq_errno() == EAGAIN && nframes == 0)
                        goto drained;
                    if (zmq_errno() == EINTR || zmq_errno() == EAGAIN)
                        continue;
                    DIE("zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
                }
                nframes++;
                last_size = (int64_t)zmq_msg_size(&msg);
                bytes_total += last_size;
                if (last_size >= 8)
                    memcpy(tail, (unsigned char *)zmq_msg_data(&msg) + last_size - 8, 8);
                more = zmq_msg_more(&msg);
            }
            frames_total += nframes;
            if (last_size < 8) {
                out_of_range++;
                continue;
            }
            uint64_t seq = get_seq(tail);
            if (seq == PROBE_SEQ) {
                probes++;
                if (sync != NULL && !synced) {
                    zmq_send(sync, "ready", 5, 0);
                    synced = 1;
                }
                continue;
            }
            if (seq >= (uint64_t)count) {
                out_of_range++;
                continue;
            }
            uint64_t t = now_ns();
            if (received == 0)
                t_first = t;
            t_last = t;
            received++;
            if (seen[seq / 8] & (1u << (seq % 8))) {
                dups++;
                continue;
            }
            seen[seq / 8] |= (unsigned char)(1u << (seq % 8));
            distinct++;
            if (seq == next) {
                next++;
            } else if (seq > next) {
                gaps++;
                next = seq + 1;
            } else {
                reorders++;
            }
            if (distinct == count)
                break;
        }
    drained:;
    }

    double elapsed = (double)(t_last - t_first) / 1e9;
    double rate = elapsed > 0 ? (double)(distinct > 1 ? distinct - 1 : 0) / elapsed : 0.0;
    printf("{\"role\":\"recv\",\"type\":\"%s\",\"expected\":%lld,\"received\":%lld,"
           "\"distinct\":%lld,\"lost\":%lld,\"gaps\":%lld,\"duplicates\":%lld,\"reorders\":%lld,"
           "\"unparsable\":%lld,\"probes\":%lld,\"frames\":%lld,\"bytes\":%lld,"
           "\"elapsed_s\":%.6f,\"msgs_per_s\":%.1f,\"timed_out\":%s}\n",
           type, count, received, distinct, count - distinct, gaps, dups, reorders, out_of_range,
           probes, frames_total, bytes_total, elapsed, rate, timed_out ? "true" : "false");
    fflush(stdout);

    zmq_msg_close(&msg);
    if (sync != NULL)
        zmq_close(sync);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    free(seen);
    return timed_out ? 3 : 0;
}
