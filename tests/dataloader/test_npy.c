/* .npy reader and writer: files written byte by byte here for every
 * version, dtype, byte order and order; every malformation. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/ops.h"
#include "dataloader/dataloader.h"
#include "tests/dataloader/dl_util.h"

static char dir[64];

__attribute__((constructor)) static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/ember-npy-XXXXXX");
  if (!mkdtemp(dir)) abort();
}
__attribute__((destructor)) static void remove_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) {
  }
}

static const char *path_of(const char *name) {
  static char p[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
  return p[k];
}

/* Writes magic, version, HEADER_LEN (little-endian, 2 or 4 bytes), the
 * header text padded with spaces + '\n' to a multiple of 64, then data. */
static void write_npy(const char *name, int major, int minor, const char *header,
                      const void *data, size_t nbytes) {
  FILE *f = fopen(path_of(name), "wb");
  size_t pre = major == 1 ? 10 : 12;
  size_t hl = strlen(header) + 1;
  size_t total = (pre + hl + 63) / 64 * 64;
  size_t hlen = total - pre;
  unsigned char m[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, (unsigned char)minor,
                         (unsigned char)(hlen & 255), (unsigned char)((hlen >> 8) & 255),
                         (unsigned char)((hlen >> 16) & 255), (unsigned char)(hlen >> 24)};
  fwrite(m, 1, pre, f);
  fputs(header, f);
  for (size_t i = strlen(header); i < hlen - 1; i++) fputc(' ', f);
  fputc('\n', f);
  if (nbytes) fwrite(data, 1, nbytes, f);
  fclose(f);
}

static void write_raw(const char *name, const void *b, size_t n) {
  FILE *f = fopen(path_of(name), "wb");
  if (n) fwrite(b, 1, n, f);
  fclose(f);
}

/* Loading name fails with status st and an error holding substr and
 * naming the file. */
#define EXPECT_BAD(name, st, substr)                                         \
  do {                                                                       \
    const char *p_ = path_of(name);                                          \
    ASSERT_PNULL_ERR(em_dl_npy_load(p_), st, substr);                        \
    ASSERT_TRUE(strstr(em_last_error(), p_) != NULL);                        \
  } while (0)

EM_TEST(version_1_float32) {
  const float v[6] = {0, 1.5f, -2, 3, 4.25f, 5};
  write_npy("f4", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, sizeof v);
  em_tensor *t = em_dl_npy_load(path_of("f4"));
  ASSERT_NOTNULL(t);
  ASSERT_SHAPE(t, 2, 3);
  ASSERT_EQ(em_tensor_dtype(t), EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(t, ((double[]){0, 1.5, -2, 3, 4.25, 5}), 0, 0);
  em_tensor_release(t);
}

EM_TEST(versions_2_and_3) {
  const int64_t v[4] = {-1, 0, 1LL << 40, 7};
  write_npy("i8v2", 2, 0, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", v, sizeof v);
  em_tensor *t = em_dl_npy_load(path_of("i8v2"));
  ASSERT_SHAPE(t, 4);
  ASSERT_EQ(em_tensor_dtype(t), EM_INT64);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-1, 0, 1099511627776.0, 7}), 0, 0);
  em_tensor_release(t);
  const double d[2] = {0.25, -1e300};
  /* version 3.0: a UTF-8 header (the padding may hold any text NumPy allows) */
  write_npy("f8v3", 3, 0, "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f8\"}", d, sizeof d);
  t = em_dl_npy_load(path_of("f8v3"));
  ASSERT_SHAPE(t, 2);
  ASSERT_TENSOR_CLOSE(t, ((double[]){0.25, -1e300}), 0, 0);
  em_tensor_release(t);
}

EM_TEST(every_dtype_and_byte_order) {
  const unsigned char b1[3] = {1, 0, 1};
  write_npy("b1", 1, 0, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", b1, 3);
  em_tensor *t = em_dl_npy_load(path_of("b1"));
  ASSERT_EQ(em_tensor_dtype(t), EM_BOOL);
  ASSERT_TENSOR_CLOSE(t, ((double[]){1, 0, 1}), 0, 0);
  em_tensor_release(t);
  const unsigned char u1[2] = {255, 3};
  write_npy("u1", 1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", u1, 2);
  t = em_dl_npy_load(path_of("u1"));
  ASSERT_EQ(em_tensor_dtype(t), EM_UINT8);
  ASSERT_TENSOR_CLOSE(t, ((double[]){255, 3}), 0, 0);
  em_tensor_release(t);
  write_npy("i1", 1, 0, "{'descr': '|i1', 'fortran_order': False, 'shape': (2,), }", u1, 2);
  t = em_dl_npy_load(path_of("i1"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT8);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-1, 3}), 0, 0);
  em_tensor_release(t);
  /* little-endian int16 -2, 258 */
  const unsigned char i2[4] = {0xfe, 0xff, 0x02, 0x01};
  write_npy("i2", 1, 0, "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", i2, 4);
  t = em_dl_npy_load(path_of("i2"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT16);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-2, 258}), 0, 0);
  em_tensor_release(t);
  /* big-endian int32 -100000, 16909060 */
  const unsigned char i4[8] = {0xff, 0xfe, 0x79, 0x60, 0x01, 0x02, 0x03, 0x04};
  write_npy("i4be", 1, 0, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", i4, 8);
  t = em_dl_npy_load(path_of("i4be"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT32);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-100000, 16909060}), 0, 0);
  em_tensor_release(t);
  /* big-endian float64 0.1, float16 1.5 (3e 00) and -2 (c0 00) both orders */
  const unsigned char f8[8] = {0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a};
  write_npy("f8be", 1, 0, "{'descr': '>f8', 'fortran_order': False, 'shape': (), }", f8, 8);
  t = em_dl_npy_load(path_of("f8be"));
  ASSERT_SCALAR_SHAPE(t);
  ASSERT_TENSOR_CLOSE(t, ((double[]){0.1}), 0, 0);
  em_tensor_release(t);
  const unsigned char f2be[4] = {0x3e, 0x00, 0xc0, 0x00}, f2le[4] = {0x00, 0x3e, 0x00, 0xc0};
  write_npy("f2be", 1, 0, "{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", f2be, 4);
  write_npy("f2le", 1, 0, "{'descr': '=f2', 'fortran_order': False, 'shape': (2,), }", f2le, 4);
  for (int k = 0; k < 2; k++) {
    t = em_dl_npy_load(path_of(k ? "f2le" : "f2be"));
    ASSERT_EQ(em_tensor_dtype(t), EM_FLOAT16);
    ASSERT_TENSOR_CLOSE(t, ((double[]){1.5, -2}), 0, 0);
    em_tensor_release(t);
  }
}

EM_TEST(fortran_order) {
  /* logical [[0, 1, 2], [3, 4, 5]] stored column-major */
  const int32_t v[6] = {0, 3, 1, 4, 2, 5};
  write_npy("fo", 1, 0, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", v, sizeof v);
  em_tensor *t = em_dl_npy_load(path_of("fo"));
  ASSERT_SHAPE(t, 2, 3);
  ASSERT_TRUE(em_tensor_is_contiguous(t));
  ASSERT_TENSOR_CLOSE(t, ((double[]){0, 1, 2, 3, 4, 5}), 0, 0);
  em_tensor_release(t);
  /* 3-D: element (i, j, k) = 100 i + 10 j + k at offset i + 2 j + 6 k */
  int32_t w[24];
  double expect[24];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int k = 0; k < 4; k++) {
        w[i + 2 * j + 6 * k] = 100 * i + 10 * j + k;
        expect[(i * 3 + j) * 4 + k] = 100 * i + 10 * j + k;
      }
  write_npy("fo3", 1, 0, "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3, 4), }", w, sizeof w);
  t = em_dl_npy_load(path_of("fo3"));
  ASSERT_SHAPE(t, 2, 3, 4);
  ASSERT_TENSOR_CLOSE(t, expect, 0, 0);
  em_tensor_release(t);
}

EM_TEST(header_spellings) {
  const float v[2] = {1, 2};
  /* keys reordered, double quotes, Python 2 long, no trailing comma, spaces */
  write_npy("sp", 1, 0, "{ \"fortran_order\" :False,'shape':( 2L , ) ,  'descr':'<f4'  }", v, sizeof v);
  em_tensor *t = em_dl_npy_load(path_of("sp"));
  ASSERT_NOTNULL(t);
  ASSERT_SHAPE(t, 2);
  em_tensor_release(t);
  write_npy("empty", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", NULL, 0);
  t = em_dl_npy_load(path_of("empty"));
  ASSERT_SHAPE(t, 0, 5);
  em_tensor_release(t);
}

EM_TEST(malformed_files) {
  const float v[6] = {0};
  write_raw("magic", "\x93NUMPX\x01\x00\x10\x00", 10);
  EXPECT_BAD("magic", EM_ERR_IO, "bad magic");
  write_raw("short_magic", "\x93NUM", 4);
  EXPECT_BAD("short_magic", EM_ERR_IO, "bad magic");
  write_raw("short_version", "\x93NUMPY\x01", 7);
  EXPECT_BAD("short_version", EM_ERR_IO, "truncated header: the file ends inside the version");
  write_npy("v4", 4, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", v, 4);
  EXPECT_BAD("v4", EM_ERR_IO, "unsupported format version 4.0");
  write_npy("v11", 1, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", v, 4);
  EXPECT_BAD("v11", EM_ERR_IO, "unsupported format version 1.1");
  write_raw("short_len", "\x93NUMPY\x02\x00\x10\x00", 10);
  EXPECT_BAD("short_len", EM_ERR_IO, "truncated header: the file ends inside HEADER_LEN");
  write_raw("short_header", "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'", 24);
  EXPECT_BAD("short_header", EM_ERR_IO, "truncated header: HEADER_LEN is 118 but only 14 bytes follow");
  /* a 4 GiB header claim in a tiny file: refused before reading */
  write_raw("huge_header", "\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14);
  EXPECT_BAD("huge_header", EM_ERR_IO, "HEADER_LEN is 4294967295 but only 2 bytes follow");
  write_npy("notdict", 1, 0, "['descr', '<f4']", v, 4);
  EXPECT_BAD("notdict", EM_ERR_IO, "bad header: not a Python dict literal");
  ASSERT_TRUE(strchr(em_last_error(), '\n') == NULL); /* the quote ends before the padding */
  write_npy("ctrl", 1, 0, "{'descr': '<f4'\x01, 'fortran_order': False, 'shape': (1,), }", v, 4);
  EXPECT_BAD("ctrl", EM_ERR_IO, "(header: \"{'descr': '<f4'\\x01, 'fortran_order'");
  write_npy("nokey", 1, 0, "{'descr': '<f4', 'shape': (1,), }", v, 4);
  EXPECT_BAD("nokey", EM_ERR_IO, "missing key 'fortran_order'");
  write_npy("extra", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", v, 4);
  EXPECT_BAD("extra", EM_ERR_IO, "unexpected key 'x'");
  write_npy("badfo", 1, 0, "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", v, 4);
  EXPECT_BAD("badfo", EM_ERR_IO, "fortran_order is not True or False");
  write_npy("badshape", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", v, 4);
  EXPECT_BAD("badshape", EM_ERR_IO, "shape is not a tuple of non-negative integers");
  write_npy("trail", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", v, 4);
  EXPECT_BAD("trail", EM_ERR_IO, "unexpected text after the dict");
  write_npy("struct", 1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", v, 4);
  EXPECT_BAD("struct", EM_ERR_IO, "structured dtypes");
  write_npy("obj", 1, 0, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", v, 8);
  EXPECT_BAD("obj", EM_ERR_IO, "object arrays");
  write_npy("u2", 1, 0, "{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }", v, 2);
  EXPECT_BAD("u2", EM_ERR_DTYPE, "unsupported dtype '<u2'");
  write_npy("c8", 1, 0, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", v, 8);
  EXPECT_BAD("c8", EM_ERR_DTYPE, "unsupported dtype '<c8'");
  /* no byte order, or '|', means native, as NumPy's dtype('f4') */
  const float one = 1.5f;
  write_npy("noorder", 1, 0, "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }", &one, 4);
  write_npy("pipe4", 1, 0, "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }", &one, 4);
  for (int i = 0; i < 2; i++) {
    em_tensor *n = em_dl_npy_load(path_of(i ? "pipe4" : "noorder"));
    ASSERT_EQ(em_tensor_dtype(n), EM_FLOAT32);
    ASSERT_TENSOR_CLOSE(n, ((double[]){1.5}), 0, 0);
    em_tensor_release(n);
  }
  write_npy("bareobj", 1, 0, "{'descr': 'O', 'fortran_order': False, 'shape': (1,), }", v, 8);
  EXPECT_BAD("bareobj", EM_ERR_IO, "object arrays");
  /* a shape is a tuple as Python writes it */
  write_npy("int_shape", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }", v, 4);
  EXPECT_BAD("int_shape", EM_ERR_IO, "bad header");
  write_npy("zero_lead", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (01,), }", v, 4);
  EXPECT_BAD("zero_lead", EM_ERR_IO, "bad header");
  write_npy("zeros", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (00, 2), }", v, 0);
  em_tensor *zeros = em_dl_npy_load(path_of("zeros"));
  ASSERT_SHAPE(zeros, 0, 2);
  em_tensor_release(zeros);
  write_npy("long_py2", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }", &one, 4);
  em_tensor *py2 = em_dl_npy_load(path_of("long_py2"));
  ASSERT_SHAPE(py2, 1);
  em_tensor_release(py2);
  write_npy("dims17", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': "
            "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }", v, 4);
  EXPECT_BAD("dims17", EM_ERR_IO, "the shape has 17 dims; ember supports at most 16");
  write_npy("short_data", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, 20);
  EXPECT_BAD("short_data", EM_ERR_IO, "truncated data: shape [2, 3] of <f4 needs 24 bytes but the file holds 20");
  write_npy("long_data", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 5), }", v, 24);
  EXPECT_BAD("long_data", EM_ERR_IO, "4 unexpected byte(s) after the data of shape [1, 5] of <f4");
  write_npy("huge", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }", v, 8);
  EXPECT_BAD("huge", EM_ERR_IO, "truncated data: shape [1000000, 1000000] of <f8 needs 8000000000000 bytes but the file holds 8");
  write_npy("overflow", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': "
            "(4294967296, 4294967296, 4294967296), }", v, 8);
  EXPECT_BAD("overflow", EM_ERR_IO, "whose sizes multiply to more than 2^63 elements");
  write_npy("overflow_bytes", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': "
            "(4611686018427387904,), }", v, 8);
  EXPECT_BAD("overflow_bytes", EM_ERR_IO, "more than 2^63 bytes");
  write_npy("bignum", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': "
            "(99999999999999999999999,), }", v, 8);
  EXPECT_BAD("bignum", EM_ERR_IO, "a size in the shape is too large");
  write_raw("nul", "\x93NUMPY\x01\x00\x04\x00{\0}\n", 14);
  EXPECT_BAD("nul", EM_ERR_IO, "NUL byte");
  ASSERT_PNULL_ERR(em_dl_npy_load(path_of("nope")), EM_ERR_IO, "cannot open");
}

EM_TEST(save_round_trip) {
  em_tensor *a = em_tensor_arange(em_scalar_int(0), em_scalar_int(12), em_scalar_int(1), EM_FLOAT32);
  em_tensor *m = em_tensor_view(a, EM_DIMS(3, 4));
  em_tensor *t = em_tensor_transpose(m, 0, 1); /* non-contiguous [4, 3] */
  ASSERT_OK(em_dl_npy_save(path_of("rt.npy"), t));
  /* the bytes: magic, version 1.0, a header NumPy writes the same way */
  FILE *f = fopen(path_of("rt.npy"), "rb");
  unsigned char head[128];
  size_t n = fread(head, 1, sizeof head, f);
  fclose(f);
  ASSERT_EQ(n, 128);
  ASSERT_TRUE(memcmp(head, "\x93NUMPY\x01\x00", 8) == 0);
  size_t hlen = head[8] | head[9] << 8;
  ASSERT_EQ((10 + hlen) % 64, 0);
  ASSERT_TRUE(memcmp(head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }", 59) == 0);
  ASSERT_EQ(head[10 + hlen - 1], '\n');
  em_tensor *b = em_dl_npy_load(path_of("rt.npy"));
  ASSERT_SHAPE(b, 4, 3);
  ASSERT_TENSOR_CLOSE(b, ((double[]){0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}), 0, 0);
  em_tensor_release(b);
  /* 1-D gets "(n,)", 0-dim "()" */
  em_tensor *s = em_tensor_scalar(em_scalar_int(-5), EM_INT16);
  ASSERT_OK(em_dl_npy_save(path_of("s.npy"), s));
  b = em_dl_npy_load(path_of("s.npy"));
  ASSERT_SCALAR_SHAPE(b);
  ASSERT_EQ(em_tensor_dtype(b), EM_INT16);
  ASSERT_EQ(em_test_get(b, 0), -5);
  em_tensor_release(b);
  em_tensor *bf = em_tensor_zeros(EM_DIMS(2), EM_BFLOAT16);
  ASSERT_ERR(em_dl_npy_save(path_of("bf.npy"), bf), EM_ERR_DTYPE, "NumPy has no bfloat16 type");
  em_tensor_release(bf);
  em_tensor_release(s);
  em_tensor_release(t);
  em_tensor_release(m);
  em_tensor_release(a);
}

EM_TEST(bool_bytes_empty_shapes_and_fifos) {
  /* NumPy stores a bool as any byte (nonzero is True); ember's hold 0 or 1 */
  const unsigned char b[6] = {0, 1, 2, 14, 255, 1};
  write_npy("b1c", 1, 0, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }", b, 6);
  write_npy("b1f", 1, 0, "{'descr': '|b1', 'fortran_order': True, 'shape': (2, 3), }", b, 6);
  em_tensor *c = em_dl_npy_load(path_of("b1c"));
  ASSERT_SHAPE(c, 2, 3);
  const unsigned char *cb = em_tensor_data(c);
  for (int i = 0; i < 6; i++) ASSERT_EQ(cb[i], b[i] != 0);
  em_tensor *f = em_dl_npy_load(path_of("b1f")); /* a[i][j] = byte i + 2j */
  ASSERT_SHAPE(f, 2, 3);
  const unsigned char *fb = em_tensor_data(f);
  const unsigned char want[6] = {0, 1, 1, 1, 1, 1};
  for (int i = 0; i < 6; i++) ASSERT_EQ(fb[i], want[i]);
  em_tensor_release(c);
  em_tensor_release(f);
  /* an empty array: its other sizes may be large, but their product must
   * fit (NumPy refuses it too: "array is too big") */
  write_npy("empty_big", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': "
            "(3, 0, 1099511627776), }", NULL, 0);
  em_tensor *e = em_dl_npy_load(path_of("empty_big"));
  ASSERT_SHAPE(e, 3, 0, (int64_t)1 << 40);
  em_tensor_release(e);
  write_npy("empty_overflow", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': "
            "(0, 4611686018427387903, 4611686018427387903), }", NULL, 0);
  EXPECT_BAD("empty_overflow", EM_ERR_IO, "whose sizes multiply to more than 2^63 elements");
  write_npy("empty_overflow_f", 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': "
            "(4611686018427387903, 4611686018427387903, 0), }", NULL, 0);
  EXPECT_BAD("empty_overflow_f", EM_ERR_IO, "whose sizes multiply to more than 2^63 elements");
  /* a FIFO without a writer is refused at once, not waited on */
  ASSERT_EQ(mkfifo(path_of("fifo"), 0600), 0);
  alarm(20);
  EXPECT_BAD("fifo", EM_ERR_IO, "is not a regular file");
  alarm(0);
  /* a path as long as PATH_MAX still leaves room for the reason */
  char long_path[4600];
  memset(long_path, 'a', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  ASSERT_PNULL_ERR(em_dl_npy_load(long_path), EM_ERR_IO, "File name too long");
}

/* Names in dir that start with prefix. */
static int count_prefixed(const char *prefix) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  if (d) closedir(d);
  return n;
}

EM_TEST(save_is_atomic) {
  em_tensor *small = em_tensor_arange(em_scalar_int(0), em_scalar_int(4), em_scalar_int(1), EM_INT32);
  ASSERT_OK(em_dl_npy_save(path_of("at.npy"), small));
  /* a save that fails half-way (the file size limit: write fails with
   * EFBIG) leaves the old file whole and no temporary file behind */
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_FSIZE, &rl);
    em_tensor *big = em_tensor_zeros(EM_DIMS(100000), EM_FLOAT32);
    em_status st = em_dl_npy_save(path_of("at.npy"), big);
    _exit(st == EM_ERR_IO && strstr(em_last_error(), "npy save: writing") &&
          strstr(em_last_error(), "at.npy.tmp.") ? 0 : 1);
  }
  int ws;
  ASSERT_EQ(waitpid(pid, &ws, 0), pid);
  ASSERT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  em_tensor *back = em_dl_npy_load(path_of("at.npy"));
  ASSERT_SHAPE(back, 4);
  ASSERT_TENSOR_CLOSE(back, ((double[]){0, 1, 2, 3}), 0, 0);
  em_tensor_release(back);
  ASSERT_EQ(count_prefixed("at.npy"), 1);
  /* a save that succeeds replaces the file whole */
  em_tensor *two = em_tensor_full(EM_DIMS(2, 2), em_scalar_float(2.5), EM_FLOAT64);
  ASSERT_OK(em_dl_npy_save(path_of("at.npy"), two));
  back = em_dl_npy_load(path_of("at.npy"));
  ASSERT_SHAPE(back, 2, 2);
  ASSERT_TENSOR_CLOSE(back, ((double[]){2.5, 2.5, 2.5, 2.5}), 0, 0);
  ASSERT_EQ(count_prefixed("at.npy"), 1);
  /* as an in-place write would: a symlink's target is replaced (the link
   * stays), and the file keeps its permissions */
  ASSERT_EQ(chmod(path_of("at.npy"), 0640), 0);
  ASSERT_EQ(symlink("at.npy", path_of("link.npy")), 0);
  ASSERT_OK(em_dl_npy_save(path_of("link.npy"), small));
  struct stat lst, tst;
  ASSERT_EQ(lstat(path_of("link.npy"), &lst), 0);
  ASSERT_TRUE(S_ISLNK(lst.st_mode));
  ASSERT_EQ(stat(path_of("at.npy"), &tst), 0);
  ASSERT_EQ(tst.st_mode & 07777, 0640);
  em_tensor_release(back);
  back = em_dl_npy_load(path_of("at.npy"));
  ASSERT_SHAPE(back, 4);
  ASSERT_EQ(count_prefixed("at.npy"), 1);
  /* a directory that does not exist: the error names the file */
  em_clear_error();
  ASSERT_ERR(em_dl_npy_save(path_of("no-such-dir/x.npy"), two), EM_ERR_IO, "no-such-dir/x.npy");
  em_tensor_release(back);
  em_tensor_release(two);
  em_tensor_release(small);
}

EM_TEST_MAIN()
