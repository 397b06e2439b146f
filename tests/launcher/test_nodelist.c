/* Slurm host list expansion (SLURM_JOB_NODELIST), checked against lists
 * written out by hand. */
#include "launcher/launcher_impl.h"
#include "tests/harness.h"

/* Expands list and compares with the space-separated names in want. */
static int check(const char *list, const char *want, const char *file, int line) {
  char **h = NULL;
  size_t n = 0;
  if (tr_nodelist_expand(list, &h, &n) != EM_OK) {
    fprintf(stderr, "  %s:%d: '%s' failed: %s\n", file, line, list, em_last_error());
    return 0;
  }
  char got[4096] = "";
  size_t off = 0;
  for (size_t i = 0; i < n && off < sizeof got; i++)
    off += (size_t)snprintf(got + off, sizeof got - off, "%s%s", i ? " " : "", h[i]);
  tr_hosts_free(h, n);
  if (strcmp(got, want) != 0) {
    fprintf(stderr, "  %s:%d: '%s' expanded to\n    \"%s\"\n  expected\n    \"%s\"\n", file, line,
            list, got, want);
    return 0;
  }
  return 1;
}
#define CHECK(list, want)                                     \
  do {                                                        \
    if (!check(list, want, __FILE__, __LINE__)) {             \
      em_test_failed_now = 1;                                 \
      return;                                                 \
    }                                                         \
  } while (0)

#define CHECK_ERR(list, substr)                                              \
  do {                                                                       \
    char **h_ = NULL;                                                        \
    size_t n_ = 0;                                                           \
    em_clear_error();                                                        \
    em_status s_ = tr_nodelist_expand(list, &h_, &n_);                       \
    tr_hosts_free(h_, n_);                                                   \
    if (s_ != EM_ERR_INVALID || !strstr(em_last_error(), substr)) {          \
      EM_FAILF("'%s': expected an error containing \"%s\", got %s: \"%s\"",  \
               list, substr, em_status_name(s_), em_last_error());           \
      return;                                                                \
    }                                                                        \
  } while (0)

EM_TEST(single_names) {
  CHECK("node01", "node01");
  CHECK("a,b,c", "a b c");
  CHECK("host-1.example.com", "host-1.example.com");
}

EM_TEST(ranges_and_padding) {
  CHECK("node[01-04,07]", "node01 node02 node03 node04 node07");
  CHECK("n[1-3]", "n1 n2 n3");
  CHECK("n[9-11]", "n9 n10 n11");
  CHECK("x[08-10]", "x08 x09 x10");
  CHECK("x[098-101]", "x098 x099 x100 x101");
  CHECK("gpu[5]", "gpu5");
  CHECK("gpu[007]", "gpu007");
}

EM_TEST(several_groups_and_entries) {
  CHECK("a[1-2],b[3-4]", "a1 a2 b3 b4");
  CHECK("node[1-2],login,gpu[10-11]", "node1 node2 login gpu10 gpu11");
  /* two bracket groups in one name: the product, leftmost outermost */
  CHECK("r[1-2]n[1-2]", "r1n1 r1n2 r2n1 r2n2");
  CHECK("rack[1-2]-node[01-02].ib",
        "rack1-node01.ib rack1-node02.ib rack2-node01.ib rack2-node02.ib");
}

EM_TEST(prefixes_with_digits) {
  CHECK("node1[0-2]", "node10 node11 node12");
  CHECK("c2n[3-4]", "c2n3 c2n4");
  CHECK("a1[0-1]b2", "a10b2 a11b2");
}

EM_TEST(errors) {
  CHECK_ERR("", "empty");
  CHECK_ERR("node[1-", "without a closing");
  CHECK_ERR("node1-2]", "without an opening");
  CHECK_ERR("node[3-1]", "backwards");
  CHECK_ERR("node[a-b]", "is not a number");
  CHECK_ERR("node[]", "empty brackets");
  CHECK_ERR("node[1-2", "without a closing");
  CHECK_ERR("a,,b", "empty host name");
  CHECK_ERR("node[1-[2]]", "nested");
  CHECK_ERR("a b", "white space");
  CHECK_ERR("n[0-99999999]", "more than");
}

EM_TEST_MAIN()
