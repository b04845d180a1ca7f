/* Shared helpers for the benchmark load programs (zsend, zrecv, zfwd).
 *
 * Endpoint syntax (all programs): "@tcp://127.0.0.1:5555" binds,
 * ">tcp://127.0.0.1:5555" connects; several may be joined with commas.
 *
 * Message layout: every data message carries its sequence number in the LAST
 * 8 bytes of its LAST frame (little endian), so the receiver does not need to
 * know the envelope (one frame "topic...seq", two frames [topic][...seq], or a
 * router envelope with an attributes frame in the middle). Sequence number
 * UINT64_MAX marks a probe: a message sent before the measurement to prove
 * the whole path (including subscriptions) is up; receivers do not count it.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define PROBE_SEQ UINT64_MAX

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void sleep_until_ns(uint64_t t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(t / 1000000000ull);
    ts.tv_nsec = (long)(t % 1000000000ull);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static inline void put_seq(unsigned char *p, uint64_t seq)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(seq >> (8 * i));
}

static inline uint64_t get_seq(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        exit(2);                                                                                   \
    } while (0)

static inline long long parse_num(const char *flag, const char *s)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s)
        DIE("%s: not a number: '%s'", flag, s);
    /* Accept k/m suffixes for readability: 500k, 2m. */
    if (*end == 'k' || *end == 'K') {
        v *= 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000;
        end++;
    }
    if (*end != '\0')
        DIE("%s: not a number: '%s'", flag, s);
    return v;
}

static inline void set_int(void *sock, int opt, int value, const char *name)
{
    if (zmq_setsockopt(sock, opt, &value, sizeof value) != 0)
        DIE("zmq_setsockopt(%s=%d): %s", name, value, zmq_strerror(zmq_errno()));
}

/* Applies the common socket options; a negative value keeps libzmq's default. */
static inline void set_opts(void *sock, int sndhwm, int rcvhwm, int sndbuf, int rcvbuf)
{
    if (sndhwm >= 0)
        set_int(sock, ZMQ_SNDHWM, sndhwm, "ZMQ_SNDHWM");
    if (rcvhwm >= 0)
        set_int(sock, ZMQ_RCVHWM, rcvhwm, "ZMQ_RCVHWM");
    if (sndbuf >= 0)
        set_int(sock, ZMQ_SNDBUF, sndbuf, "ZMQ_SNDBUF");
    if (rcvbuf >= 0)
        set_int(sock, ZMQ_RCVBUF, rcvbuf, "ZMQ_RCVBUF");
}

/* CURVE client: `secret` is our Z85 secret key (the public key is derived),
 * `server_key` the server's Z85 public key. NULL secret: NULL mechanism. */
static inline void curve_client(void *sock, const char *secret, const char *server_key)
{
    if (secret == NULL)
        return;
    if (server_key == NULL)
        DIE("--curve-secret needs --curve-server-key");
    char public_key[41];
    if (zmq_curve_public(public_key, secret) != 0)
        DIE("--curve-secret: not a Z85 secret key: %s", zmq_strerror(zmq_errno()));
    if (zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public_key, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_key, 40) != 0)
        DIE("CURVE client keys: %s", zmq_strerror(zmq_errno()));
}

/* CURVE server with the Z85 secret key `secret`; with no ZAP handler
 * libzmq admits every client key. NULL: NULL mechanism. */
static inline void curve_server(void *sock, const char *secret)
{
    if (secret == NULL)
        return;
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 40) != 0)
        DIE("CURVE server key: %s", zmq_strerror(zmq_errno()));
}

/* Binds or connects `sock` to every endpoint in the comma-separated `spec`. */
static inline void attach(void *sock, const char *spec)
{
    char *copy = strdup(spec);
    char *save = NULL;
    if (copy == NULL)
        DIE("out of memory");
    for (char *ep = strtok_r(copy, ",", &save); ep != NULL; ep = strtok_r(NULL, ",", &save)) {
        int rc;
        if (ep[0] == '@')
            rc = zmq_bind(sock, ep + 1);
        else if (ep[0] == '>')
            rc = zmq_connect(sock, ep + 1);
        else
            DIE("endpoint '%s' must start with '@' (bind) or '>' (connect)", ep);
        if (rc != 0)
            DIE("%s %s: %s", ep[0] == '@' ? "bind" : "connect", ep + 1,
                zmq_strerror(zmq_errno()));
    }
    free(copy);
}

#endif
