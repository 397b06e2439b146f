/* Helpers shared by the dataloader tests. */
#ifndef EMBER_TESTS_DL_UTIL_H
#define EMBER_TESTS_DL_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "tests/harness.h"

/* A pointer-returning call (any type) must return NULL with status st and a
 * message containing substr. */
#define ASSERT_PNULL_ERR(call, st, substr)                                              \
  do {                                                                                \
    em_clear_error();                                                                 \
    void *em_p_ = (void *)(call);                                                     \
    if (em_p_ || em_last_status() != (st) || !strstr(em_last_error(), (substr))) {    \
      EM_FAILF("%s: expected NULL with %s containing \"%s\", got %s %s: \"%s\"", #call, \
               em_status_name(st), substr, em_p_ ? "an object" : "NULL",              \
               em_status_name(em_last_status()), em_last_error());                    \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* Number of /dev/shm entries whose name starts with "ember-dl-"; with
 * pid > 0 only those created by that pid. */
static inline int dl_shm_count(long pid) {
  DIR *d = opendir("/dev/shm");
  if (!d) return 0;
  char pre[64];
  if (pid > 0) snprintf(pre, sizeof pre, "ember-dl-%ld-", pid);
  else snprintf(pre, sizeof pre, "ember-dl-");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, pre, strlen(pre)) == 0) n++;
  closedir(d);
  return n;
}

/* True while pid exists and is not a zombie. */
static inline int dl_pid_running(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  if (!p || p[1] == '\0' || p[2] == '\0') return 0;
  return p[2] != 'Z' && p[2] != 'X';
}

#endif
