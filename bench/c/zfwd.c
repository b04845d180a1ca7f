/* zfwd: libzmq reference forwarders for the benchmarks, built on zmq_proxy.
 *
 *   zfwd --mode pull-push|sub-pub|xsub-xpub|router-dealer --in SPEC --out SPEC
 *        [--hwm N] [--sndbuf N] [--rcvbuf N] [--io-threads N]
 *
 * pull-push  PULL (in) -> PUSH (out): the reference for the PULL/PUSH roles.
 * sub-pub    SUB (in, subscribed to everything) -> PUB (out).
 * xsub-xpub  XSUB (in) <-> XPUB (out): libzmq's own zmq_proxy broker, whose
 *            subscriptions flow upstream; the reference for the router.
 * router-dealer  ROUTER (in, for REQ clients) <-> DEALER (out, for REP
 *            services): libzmq's shared-queue broker; the broker reference
 *            of the request/reply suite (bench/reqrep.py). Here --out
 *            usually connects (">tcp://...") to a binding service.
 *
 * --hwm sets both ZMQ_SNDHWM and ZMQ_RCVHWM on both sockets (messages);
 * --sndbuf/--rcvbuf set the kernel buffer sizes (bytes). Runs until killed.
 */
#include "common.h"

static void usage(void)
{
    fprintf(stderr, "usage: zfwd --mode pull-push|sub-pub|xsub-xpub|router-dealer --in SPEC "
                    "--out SPEC [--hwm N] [--sndbuf N] [--rcvbuf N] [--io-threads N] [--curve-secret Z85]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode = NULL, *in_spec = NULL, *out_spec = NULL;
    long long hwm = -1, sndbuf = -1, rcvbuf = -1, io_threads = 1;
    const char *curve_secret = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--mode"))
            mode = v;
        else if (FLAG("--in"))
            in_spec = v;
        else if (FLAG("--out"))
            out_spec = v;
        else if (FLAG("--hwm"))
            hwm = parse_num(a, v);
        else if (FLAG("--sndbuf"))
            sndbuf = parse_num(a, v);
        else if (FLAG("--rcvbuf"))
            rcvbuf = parse_num(a, v);
        else if (FLAG("--io-threads"))
            io_threads = parse_num(a, v);
        else if (FLAG("--curve-secret"))
            curve_secret = v;
        else
            usage();
#undef FLAG
    }
    if (mode == NULL || in_spec == NULL || out_spec == NULL)
        usage();
    int in_type, out_type;
    if (strcmp(mode, "pull-push") == 0) {
        in_type = ZMQ_PULL;
        out_type = ZMQ_PUSH;
    } else if (strcmp(mode, "sub-pub") == 0) {
        in_type = ZMQ_SUB;
        out_type = ZMQ_PUB;
    } else if (strcmp(mode, "xsub-xpub") == 0) {
        in_type = ZMQ_XSUB;
        out_type = ZMQ_XPUB;
    } else if (strcmp(mode, "router-dealer") == 0) {
        in_type = ZMQ_ROUTER;
        out_type = ZMQ_DEALER;
    } else {
        usage();
    }

    void *ctx = zmq_ctx_new();
    if (zmq_ctx_set(ctx, ZMQ_IO_THREADS, (int)io_threads) != 0)
        DIE("ZMQ_IO_THREADS: %s", zmq_strerror(zmq_errno()));
    void *in = zmq_socket(ctx, in_type);
    void *out = zmq_socket(ctx, out_type);
    if (in == NULL || out == NULL)
        DIE("zmq_socket: %s", zmq_strerror(zmq_errno()));
    set_opts(in, (int)hwm, (int)hwm, (int)sndbuf, (int)rcvbuf);
    set_opts(out, (int)hwm, (int)hwm, (int)sndbuf, (int)rcvbuf);
    set_int(in, ZMQ_LINGER, 0, "ZMQ_LINGER");
    set_int(out, ZMQ_LINGER, 0, "ZMQ_LINGER");
    /* --curve-secret: both sides are CURVE servers with this key. */
    curve_server(in, curve_secret);
    curve_server(out, curve_secret);
    if (in_type == ZMQ_SUB && zmq_setsockopt(in, ZMQ_SUBSCRIBE, "", 0) != 0)
        DIE("subscribe: %s", zmq_strerror(zmq_errno()));
    attach(in, in_spec);
    attach(out, out_spec);
    fprintf(stderr, "zfwd: %s forwarding %s -> %s\n", mode, in_spec, out_spec);

    zmq_proxy(in, out, NULL); /* returns only when the context is terminated */
    zmq_close(in);
    zmq_close(out);
    zmq_ctx_term(ctx);
    return 0;
}
