/* A TCP port for a server that a test starts later (a store, a
 * rendezvous), shared by the C tests:
 *
 *     #include "tests/free_port.h"
 *     int port = em_test_free_port();
 *
 * Closing a port that bind(0) gave and binding it again later is a race
 * when tests run side by side: the kernel hands the same ephemeral port to
 * the next bind(0) or outgoing connection of another test ("Address
 * already in use"). So the port is drawn below the kernel's ephemeral
 * range (ip_local_port_range), which neither of those ever takes, and is
 * checked free by binding it. Returns -1 when none was found.
 */
#ifndef EMBER_TESTS_FREE_PORT_H
#define EMBER_TESTS_FREE_PORT_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Binds 127.0.0.1:port (0: any) and closes it again. Returns the port
 * bound, 0 when it could not be bound. */
static inline int em_test_try_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  int got = 0;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
    got = ntohs(sa.sin_port);
  close(fd);
  return got;
}

static inline int em_test_free_port(void) {
  int lo = 32768, hi = 60999;
  FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f) {
    if (fscanf(f, "%d %d", &lo, &hi) != 2) {
      lo = 32768;
      hi = 60999;
    }
    fclose(f);
  }
  int base;
  if (lo >= 11024) {
    base = lo - 10000; /* the 10000 ports below the range */
  } else if (hi <= 55535) {
    base = hi + 1; /* the 10000 above it */
  } else { /* no room outside the range: the old race, but a port */
    int p = em_test_try_port(0);
    return p ? p : -1;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint32_t x = (uint32_t)getpid() * 2654435761u ^ (uint32_t)ts.tv_nsec;
  for (int tries = 0; tries < 200; tries++) {
    x ^= x << 13; /* xorshift32 */
    x ^= x >> 17;
    x ^= x << 5;
    int port = base + (int)(x % 10000);
    if (em_test_try_port(port)) return port;
  }
  return -1;
}

#endif
