// The floor for `cargo xtask bench`: what this machine can do at all for
// the two routes the service is measured on. One epoll loop per core, each
// on a SO_REUSEPORT socket of its own; a request is read into the loop's
// one buffer and answered with a fixed response once its headers end; no
// other parsing, no per-connection memory of its own. Not a server to
// ship: a request split across reads is dropped, and nothing is logged.
//
//   cc -O2 -pthread -o floor floor.c && ./floor 127.0.0.1:8082

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

// The Go reference's bodies, with the headers every server sends.
static const char HEALTH[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    "{\"status\":\"ok\"}";
static const char ROOT[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 63\r\n\r\n"
    "{\"message\":\"Hello from app\",\"service\":\"app\",\"version\":\"0.1.0\"}\n";

static struct sockaddr_in address;

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static int listener(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0)
        fail("socket");
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) fail("bind");
    if (listen(fd, 4096) < 0) fail("listen");
    return fd;
}

// Answers every complete request in `data`; returns -1 to close.
static int answer(int fd, const char *data, ssize_t length) {
    const char *at = data, *end = data + length;
    while (at < end) {
        const char *headers_end = memmem(at, end - at, "\r\n\r\n", 4);
        if (headers_end == NULL) return -1;
        int health = end - at > 12 && memcmp(at, "GET /healthz", 12) == 0;
        const char *response = health ? HEALTH : ROOT;
        size_t size = health ? sizeof HEALTH - 1 : sizeof ROOT - 1;
        if (write(fd, response, size) != (ssize_t)size) return -1;
        at = headers_end + 4;
    }
    return 0;
}

static void *serve(void *unused) {
    (void)unused;
    int listen_fd = listener();
    int poll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listen_fd};
    if (poll < 0 || epoll_ctl(poll, EPOLL_CTL_ADD, listen_fd, &event) < 0) fail("epoll");
    static __thread char buffer[16384];
    struct epoll_event ready[256];
    for (;;) {
        int count = epoll_wait(poll, ready, 256, -1);
        if (count < 0 && errno != EINTR) fail("epoll_wait");
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listen_fd) {
                int client;
                while ((client = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int on = 1;
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
                    struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(poll, EPOLL_CTL_ADD, client, &added);
                }
                continue;
            }
            ssize_t length = read(fd, buffer, sizeof buffer);
            if (length < 0 && errno == EAGAIN) continue;
            if (length <= 0 || answer(fd, buffer, length) < 0) close(fd);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: floor HOST:PORT\n");
        return 2;
    }
    char host[64];
    int port;
    if (sscanf(argv[1], "%63[^:]:%d", host, &port) != 2) {
        fprintf(stderr, "floor: %s is not HOST:PORT\n", argv[1]);
        return 2;
    }
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "floor: %s is not an IPv4 address\n", host);
        return 2;
    }
    // Room for the idle-connection measurement, as the others raise theirs.
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t threads[256];
    for (long i = 0; i < cores && i < 256; i++)
        if (pthread_create(&threads[i], NULL, serve, NULL) != 0) fail("pthread_create");
    pthread_join(threads[0], NULL);
    return 0;
}
