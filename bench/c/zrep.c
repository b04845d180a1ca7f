/* zrep: an echo service for request/reply benchmarks.
 *
 *   zrep (--bind ENDPOINT | --connect ENDPOINT) [--threads K] [--echo last|all]
 *
 * ENDPOINT is "tcp://HOST:PORT" (several may be joined with commas). A
 * ROUTER socket binds (or connects) there and hands requests to K worker
 * threads (default 1), each with its own REP socket, through an inproc
 * DEALER (zmq_proxy, the libzmq "shared queue"): K clients are served
 * concurrently, whether they are REQ clients connected directly or one
 * router's DEALER with many requests in flight. --threads 0 is one REP
 * socket on ENDPOINT itself, no queue: the least a service can add to a
 * round trip, one request at a time. Each request [frames...]
 * is answered with its last frame, the payload (--echo last, the
 * default), or with every frame (--echo all).
 *
 * On SIGTERM or SIGINT it prints one JSON line, {"requests": N, "threads": K},
 * and exits 0.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define BACKEND "inproc://zrep-workers"
#define MAX_FRAMES 16

static void usage(void)
{
    fprintf(stderr,
            "usage: zrep (--bind ENDPOINT | --connect ENDPOINT) [--threads K] [--echo last|all]\n");
    exit(2);
}

static void *g_ctx;
static int g_echo_all;
static atomic_llong g_requests;

/* Answers requests on `arg`, a REP socket, or (NULL) on a new REP socket
 * connected to the queue's backend. */
static void *worker(void *arg)
{
    void *rep = arg;
    if (rep == NULL) {
        rep = zmq_socket(g_ctx, ZMQ_REP);
        if (rep == NULL || zmq_connect(rep, BACKEND) != 0)
            DIE("worker REP: %s", zmq_strerror(zmq_errno()));
    }
    zmq_msg_t frames[MAX_FRAMES];
    for (;;) {
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t *m = &frames[n < MAX_FRAMES ? n : MAX_FRAMES - 1];
            if (n >= MAX_FRAMES) /* too many frames: keep the last one only */
                zmq_msg_close(m);
            zmq_msg_init(m);
            if (zmq_msg_recv(m, rep, 0) < 0) {
                if (zmq_errno() == ETERM)
                    return NULL;
                DIE("worker recv: %s", zmq_strerror(zmq_errno()));
            }
            more = zmq_msg_more(m);
            if (n < MAX_FRAMES)
                n++;
        }
        int from = g_echo_all ? 0 : n - 1;
        for (int i = 0; i < n; i++) {
            if (i < from) {
                zmq_msg_close(&frames[i]);
                continue;
            }
            if (zmq_msg_send(&frames[i], rep, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
                if (zmq_errno() == ETERM)
                    return NULL;
                DIE("worker send: %s", zmq_strerror(zmq_errno()));
            }
        }
        atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
    }
}

static void *proxy(void *arg)
{
    void **socks = arg;
    zmq_proxy(socks[0], socks[1], NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *bind = NULL, *connect = NULL, *echo = "last";
    long long threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
        if (FLAG("--bind"))
            bind = v;
        else if (FLAG("--connect"))
            connect = v;
        else if (FLAG("--threads"))
            threads = parse_num(a, v);
        else if (FLAG("--echo"))
            echo = v;
        else
            usage();
#undef FLAG
    }
    if ((bind == NULL) == (connect == NULL) || threads < 0 || threads > 1024)
        usage();
    if (strcmp(echo, "all") == 0)
        g_echo_all = 1;
    else if (strcmp(echo, "last") != 0)
        usage();

    /* Only the main thread takes SIGTERM/SIGINT (sigwait below). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    g_ctx = zmq_ctx_new();
    void *front = zmq_socket(g_ctx, threads == 0 ? ZMQ_REP : ZMQ_ROUTER);
    if (front == NULL)
        DIE("zmq_socket: %s", zmq_strerror(zmq_errno()));
    set_int(front, ZMQ_LINGER, 0, "ZMQ_LINGER");
    char spec[1024];
    const char *ep = bind != NULL ? bind : connect;
    const char *bare = (ep[0] == '@' || ep[0] == '>') ? ep + 1 : ep;
    /* Every comma-separated endpoint gets the same direction. */
    size_t o = 0;
    spec[o++] = bind != NULL ? '@' : '>';
    for (const char *p = bare; *p && o + 2 < sizeof spec; p++) {
        if (*p == ',') {
            spec[o++] = ',';
            if (p[1] == '@' || p[1] == '>')
                p++;
            spec[o++] = bind != NULL ? '@' : '>';
        } else {
            spec[o++] = *p;
        }
    }
    spec[o] = '\0';
    attach(front, spec);

    pthread_t tid;
    void *socks[2] = {front, NULL};
    if (threads == 0) {
        if (pthread_create(&tid, NULL, worker, front) != 0)
            DIE("pthread_create failed");
    } else {
        void *back = zmq_socket(g_ctx, ZMQ_DEALER);
        if (back == NULL)
            DIE("zmq_socket: %s", zmq_strerror(zmq_errno()));
        set_int(back, ZMQ_LINGER, 0, "ZMQ_LINGER");
        if (zmq_bind(back, BACKEND) != 0)
            DIE("bind %s: %s", BACKEND, zmq_strerror(zmq_errno()));
        socks[1] = back;
        for (long long i = 0; i < threads; i++)
            if (pthread_create(&tid, NULL, worker, NULL) != 0)
                DIE("pthread_create failed");
        if (pthread_create(&tid, NULL, proxy, socks) != 0)
            DIE("pthread_create failed");
    }

    int sig = 0;
    sigwait(&sigs, &sig);
    printf("{\"requests\":%lld,\"threads\":%lld}\n", (long long)atomic_load(&g_requests), threads);
    fflush(stdout);
    /* Workers and the proxy block in libzmq; exiting is the clean stop. */
    _exit(0);
}
