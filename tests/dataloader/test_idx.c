/* IDX reader: files written byte by byte here (plain, gzip by zlib, and
 * gzip "stored" blocks built by hand), every malformation, and the real
 * Fashion-MNIST files (compared with a minimal independent parser). */
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "dataloader/dataloader.h"
#include "tests/dataloader/dl_util.h"

static char dir[64];

__attribute__((constructor)) static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/ember-idx-XXXXXX");
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

static void write_file(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (n) fwrite(b, 1, n, f);
  fclose(f);
}

/* A byte buffer built up by hand. */
typedef struct buf {
  unsigned char b[1 << 16];
  size_t n;
} buf;
static void put(buf *B, int byte) { B->b[B->n++] = (unsigned char)byte; }
static void put_be32(buf *B, uint32_t v) {
  put(B, v >> 24), put(B, (v >> 16) & 255), put(B, (v >> 8) & 255), put(B, v & 255);
}
static void put_le32(buf *B, uint32_t v) {
  put(B, v & 255), put(B, (v >> 8) & 255), put(B, (v >> 16) & 255), put(B, v >> 24);
}
static void idx_header(buf *B, int type, int ndim, const uint32_t *dims) {
  put(B, 0), put(B, 0), put(B, type), put(B, ndim);
  for (int i = 0; i < ndim; i++) put_be32(B, dims[i]);
}

/* CRC-32 (IEEE, reflected), bit by bit. */
static uint32_t crc32_ref(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

/* gzip member with one stored deflate block (n < 65536). */
static void write_gzip_stored(const char *path, const unsigned char *data, size_t n) {
  buf *B = calloc(1, sizeof *B);
  put(B, 0x1f), put(B, 0x8b), put(B, 8), put(B, 0); /* magic, deflate, no flags */
  put_le32(B, 0), put(B, 0), put(B, 3);             /* mtime, xfl, OS unix */
  put(B, 1);                                        /* BFINAL=1, BTYPE=stored */
  put(B, n & 255), put(B, n >> 8), put(B, ~n & 255), put(B, (~n >> 8) & 255);
  for (size_t i = 0; i < n; i++) put(B, data[i]);
  put_le32(B, crc32_ref(data, n));
  put_le32(B, (uint32_t)n);
  write_file(path, B->b, B->n);
  free(B);
}

static void write_gzip_zlib(const char *path, const unsigned char *data, size_t n) {
  gzFile g = gzopen(path, "wb9");
  gzwrite(g, data, (unsigned)n);
  gzclose(g);
}

EM_TEST(uint8_plain_and_gzip) {
  buf *B = calloc(1, sizeof *B);
  idx_header(B, 0x08, 3, (const uint32_t[]){2, 3, 4});
  for (int i = 0; i < 24; i++) put(B, 200 + i % 50 - i);
  write_file(path_of("u8"), B->b, B->n);
  write_gzip_zlib(path_of("u8.gz"), B->b, B->n);
  write_gzip_stored(path_of("u8s.gz"), B->b, B->n);
  const char *names[] = {"u8", "u8.gz", "u8s.gz"};
  for (int f = 0; f < 3; f++) {
    em_tensor *t = em_dl_idx_load(path_of(names[f]));
    ASSERT_NOTNULL(t);
    ASSERT_SHAPE(t, 2, 3, 4);
    ASSERT_EQ(em_tensor_dtype(t), EM_UINT8);
    for (int i = 0; i < 24; i++) ASSERT_EQ(em_test_get(t, i), (uint8_t)(200 + i % 50 - i));
    em_tensor_release(t);
  }
  free(B);
}

EM_TEST(every_type_big_endian) {
  buf *B = calloc(1, sizeof *B);
  /* int8 [3]: -1, 127, -128 */
  idx_header(B, 0x09, 1, (const uint32_t[]){3});
  put(B, 0xff), put(B, 0x7f), put(B, 0x80);
  write_file(path_of("i8"), B->b, B->n);
  B->n = 0;
  /* int16 [2]: -2 = ff fe, 258 = 01 02 */
  idx_header(B, 0x0B, 1, (const uint32_t[]){2});
  put(B, 0xff), put(B, 0xfe), put(B, 0x01), put(B, 0x02);
  write_file(path_of("i16"), B->b, B->n);
  B->n = 0;
  /* int32 [2]: -100000 = ff fe 79 60, 16909060 = 01 02 03 04 */
  idx_header(B, 0x0C, 1, (const uint32_t[]){2});
  put_be32(B, 0xfffe7960u), put_be32(B, 0x01020304u);
  write_file(path_of("i32"), B->b, B->n);
  B->n = 0;
  /* float32 [1, 2]: 1.5 = 3f c0 00 00, -2.25 = c0 10 00 00 */
  idx_header(B, 0x0D, 2, (const uint32_t[]){1, 2});
  put_be32(B, 0x3fc00000u), put_be32(B, 0xc0100000u);
  write_file(path_of("f32"), B->b, B->n);
  B->n = 0;
  /* float64 [1]: 0.1 = 3f b9 99 99 99 99 99 9a */
  idx_header(B, 0x0E, 1, (const uint32_t[]){1});
  put_be32(B, 0x3fb99999u), put_be32(B, 0x9999999au);
  write_file(path_of("f64"), B->b, B->n);
  free(B);

  em_tensor *t = em_dl_idx_load(path_of("i8"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT8);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-1, 127, -128}), 0, 0);
  em_tensor_release(t);
  t = em_dl_idx_load(path_of("i16"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT16);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-2, 258}), 0, 0);
  em_tensor_release(t);
  t = em_dl_idx_load(path_of("i32"));
  ASSERT_EQ(em_tensor_dtype(t), EM_INT32);
  ASSERT_TENSOR_CLOSE(t, ((double[]){-100000, 16909060}), 0, 0);
  em_tensor_release(t);
  t = em_dl_idx_load(path_of("f32"));
  ASSERT_EQ(em_tensor_dtype(t), EM_FLOAT32);
  ASSERT_SHAPE(t, 1, 2);
  ASSERT_TENSOR_CLOSE(t, ((double[]){1.5, -2.25}), 0, 0);
  em_tensor_release(t);
  t = em_dl_idx_load(path_of("f64"));
  ASSERT_EQ(em_tensor_dtype(t), EM_FLOAT64);
  ASSERT_TENSOR_CLOSE(t, ((double[]){0.1}), 0, 0);
  em_tensor_release(t);
}

EM_TEST(empty_dims) {
  buf B = {.n = 0};
  idx_header(&B, 0x08, 2, (const uint32_t[]){0, 28});
  write_file(path_of("empty"), B.b, B.n);
  em_tensor *t = em_dl_idx_load(path_of("empty"));
  ASSERT_SHAPE(t, 0, 28);
  em_tensor_release(t);
}

EM_TEST(malformed_files) {
  buf *B = calloc(1, sizeof *B);
  const char *p;
#define EXPECT_BAD(name, substr)                                              \
  do {                                                                        \
    p = path_of(name);                                                        \
    ASSERT_PNULL_ERR(em_dl_idx_load(p), EM_ERR_IO, substr);                   \
    ASSERT_TRUE(strstr(em_last_error(), p) != NULL); /* names the file */     \
  } while (0)
  /* bad magic: first byte not zero */
  put(B, 1), put(B, 0), put(B, 8), put(B, 1), put_be32(B, 1), put(B, 5);
  write_file(path_of("magic"), B->b, B->n);
  EXPECT_BAD("magic", "bad magic 01 00 08 01");
  /* unknown type code */
  B->n = 0;
  idx_header(B, 0x0A, 1, (const uint32_t[]){1});
  put(B, 5);
  write_file(path_of("type"), B->b, B->n);
  EXPECT_BAD("type", "bad magic 00 00 0a 01");
  /* wrong dims: 0 and 17 */
  B->n = 0;
  put(B, 0), put(B, 0), put(B, 8), put(B, 0);
  write_file(path_of("dims0"), B->b, B->n);
  EXPECT_BAD("dims0", "wrong number of dims 0");
  B->n = 0;
  put(B, 0), put(B, 0), put(B, 8), put(B, 17);
  for (int i = 0; i < 17; i++) put_be32(B, 1);
  put(B, 0);
  write_file(path_of("dims17"), B->b, B->n);
  EXPECT_BAD("dims17", "wrong number of dims 17");
  /* truncated header: inside the magic, inside the sizes */
  write_file(path_of("short0"), (const unsigned char *)"", 0);
  EXPECT_BAD("short0", "truncated header");
  write_file(path_of("short3"), (const unsigned char[]){0, 0, 8}, 3);
  EXPECT_BAD("short3", "truncated header: the IDX file ends after 3 of 4 magic bytes");
  B->n = 0;
  idx_header(B, 0x08, 3, (const uint32_t[]){2, 3, 4});
  write_file(path_of("short_dims"), B->b, 10);
  EXPECT_BAD("short_dims", "truncated header: 3 dims need 12 size bytes but the IDX file ends after 6");
  write_gzip_stored(path_of("short_dims.gz"), B->b, 10);
  EXPECT_BAD("short_dims.gz", "truncated header: 3 dims need 12 size bytes but the gzip IDX file ends after 6");
  /* truncated data */
  for (int i = 0; i < 23; i++) put(B, i);
  write_file(path_of("short_data"), B->b, B->n);
  EXPECT_BAD("short_data", "truncated data: the header claims [2, 3, 4] of unsigned byte (24 bytes) but the file holds 23 bytes");
  write_gzip_zlib(path_of("short_data.gz"), B->b, B->n);
  EXPECT_BAD("short_data.gz", "truncated data: the header claims 24 bytes of data but the gzip IDX file holds 23");
  /* trailing bytes (wrong dims) */
  put(B, 23), put(B, 24);
  write_file(path_of("long"), B->b, B->n);
  EXPECT_BAD("long", "unexpected bytes after the 24 bytes of data");
  write_gzip_zlib(path_of("long.gz"), B->b, B->n);
  EXPECT_BAD("long.gz", "unexpected bytes after the 24 bytes of data");
  /* a gzip stream cut short (compressed bytes missing) */
  B->n = 0;
  idx_header(B, 0x08, 1, (const uint32_t[]){3000});
  for (int i = 0; i < 3000; i++) put(B, (i * 7919) % 251);
  write_gzip_zlib(path_of("full.gz"), B->b, B->n);
  {
    FILE *f = fopen(path_of("full.gz"), "rb");
    unsigned char tmp[8192];
    size_t n = fread(tmp, 1, sizeof tmp, f);
    fclose(f);
    write_file(path_of("cut.gz"), tmp, n / 2);
    EXPECT_BAD("cut.gz", "truncated");
    /* stored gzip with a wrong CRC */
    write_gzip_stored(path_of("crc.gz"), B->b, B->n);
    f = fopen(path_of("crc.gz"), "rb");
    n = fread(tmp, 1, sizeof tmp, f);
    fclose(f);
    tmp[n - 8] ^= 0xff;
    write_file(path_of("crc.gz"), tmp, n);
    EXPECT_BAD("crc.gz", "corrupt gzip data: incorrect data check");
    ASSERT_TRUE(strstr(em_last_error(), "<fd:") == NULL); /* zlib's own name for the stream */
  }
  /* huge claimed sizes: overflow, and too big for the file */
  B->n = 0;
  idx_header(B, 0x0E, 4, (const uint32_t[]){0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu});
  write_file(path_of("huge_overflow"), B->b, B->n);
  EXPECT_BAD("huge_overflow", "too large to exist");
  B->n = 0;
  idx_header(B, 0x08, 3, (const uint32_t[]){65536, 65536, 65536}); /* 256 TiB */
  put(B, 1);
  write_file(path_of("huge"), B->b, B->n);
  EXPECT_BAD("huge", "truncated data: the header claims [65536, 65536, 65536] of unsigned byte (281474976710656 bytes) but the file holds 1 bytes");
  write_gzip_zlib(path_of("huge.gz"), B->b, B->n);
  EXPECT_BAD("huge.gz", "more than a gzip file of");
  /* empty, but its other sizes multiply past 2^63: refused like torch and
   * NumPy refuse such a shape */
  B->n = 0;
  idx_header(B, 0x08, 3, (const uint32_t[]){0, 1u << 20, 1u << 30});
  write_file(path_of("empty_big"), B->b, B->n);
  em_tensor *big_empty = em_dl_idx_load(path_of("empty_big")); /* 2^50 fits */
  ASSERT_SHAPE(big_empty, 0, 1LL << 20, 1LL << 30);
  em_tensor_release(big_empty);
  B->n = 0;
  idx_header(B, 0x08, 3, (const uint32_t[]){0, 0xffffffffu, 0xffffffffu}); /* ~2^64 */
  write_file(path_of("empty_overflow"), B->b, B->n);
  EXPECT_BAD("empty_overflow", "too large to exist");
  B->n = 0;
  idx_header(B, 0x08, 4, (const uint32_t[]){0xffffffffu, 0xffffffffu, 0, 0xffffffffu});
  write_file(path_of("empty_overflow4"), B->b, B->n);
  EXPECT_BAD("empty_overflow4", "too large to exist");
  /* a FIFO without a writer is refused at once, not waited on */
  ASSERT_EQ(mkfifo(path_of("fifo"), 0600), 0);
  alarm(20);
  EXPECT_BAD("fifo", "is not a regular file");
  alarm(0);
  /* a plain IDX file may not be confused with gzip and vice versa */
  ASSERT_PNULL_ERR(em_dl_idx_load(path_of("does-not-exist")), EM_ERR_IO, "cannot open");
  ASSERT_PNULL_ERR(em_dl_idx_load(dir), EM_ERR_IO, "is not a regular file");
  free(B);
#undef EXPECT_BAD
}

EM_TEST(mnist_layout_dataset) {
  buf *B = calloc(1, sizeof *B);
  idx_header(B, 0x08, 3, (const uint32_t[]){3, 28, 28});
  for (int i = 0; i < 3 * 784; i++) put(B, i % 256);
  write_gzip_zlib(path_of("train-images-idx3-ubyte.gz"), B->b, B->n);
  B->n = 0;
  idx_header(B, 0x08, 1, (const uint32_t[]){3});
  put(B, 7), put(B, 0), put(B, 9);
  write_file(path_of("train-labels-idx1-ubyte"), B->b, B->n);
  em_dl_dataset *d = em_dl_mnist_create(dir, true);
  ASSERT_NOTNULL(d);
  ASSERT_EQ(em_dl_dataset_len(d), 3);
  em_dl_sample s = {0};
  ASSERT_OK(em_dl_dataset_get(d, 2, &s));
  ASSERT_SHAPE(s.t[0], 28, 28);
  ASSERT_EQ(em_tensor_dtype(s.t[0]), EM_UINT8);
  ASSERT_EQ(em_test_get(s.t[0], 0), (2 * 784) % 256);
  ASSERT_EQ(em_tensor_dtype(s.t[1]), EM_INT64);
  ASSERT_EQ(em_test_get(s.t[1], 0), 9);
  em_dl_sample_release(&s);
  em_dl_dataset_release(d);
  /* labels that do not match the images */
  B->n = 0;
  idx_header(B, 0x08, 1, (const uint32_t[]){2});
  put(B, 1), put(B, 2);
  write_file(path_of("train-labels-idx1-ubyte"), B->b, B->n);
  ASSERT_PNULL_ERR(em_dl_mnist_create(dir, true), EM_ERR_IO, "expected uint8 [3] to match the images");
  ASSERT_PNULL_ERR(em_dl_mnist_create(dir, false), EM_ERR_IO, "found neither");
  free(B);
}

/* ---- the real Fashion-MNIST ----------------------------------------------------------- */

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* An independent reader: zlib's gzread, the header parsed by hand. */
static unsigned char *ref_read(const char *name, size_t *n) {
  char p[256];
  snprintf(p, sizeof p, FMNIST "/%s", name);
  gzFile g = gzopen(p, "rb");
  if (!g) return NULL;
  size_t cap = 1 << 20, len = 0;
  unsigned char *b = malloc(cap);
  int r;
  while ((r = gzread(g, b + len, (unsigned)(cap - len))) > 0) {
    len += (size_t)r;
    if (len == cap) b = realloc(b, cap *= 2);
  }
  gzclose(g);
  *n = len;
  return b;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

EM_TEST(real_fashion_mnist) {
  struct stat st;
  if (stat(FMNIST "/train-images-idx3-ubyte.gz", &st) != 0)
    EM_SKIP("Fashion-MNIST not installed at " FMNIST " (Debian package dataset-fashion-mnist)");
  double t0 = now();
  em_dl_dataset *train = em_dl_mnist_create(FMNIST, true);
  double t1 = now();
  ASSERT_NOTNULL(train);
  em_dl_dataset *test = em_dl_mnist_create(FMNIST, false);
  ASSERT_NOTNULL(test);
  printf("  Fashion-MNIST train (60000 images, 26 MB gzip) loaded in %.0f ms\n", (t1 - t0) * 1e3);
  ASSERT_EQ(em_dl_dataset_len(train), 60000);
  ASSERT_EQ(em_dl_dataset_len(test), 10000);
  /* first labels of the train set, from the file itself */
  const int first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  for (int i = 0; i < 10; i++) {
    em_dl_sample s = {0};
    ASSERT_OK(em_dl_dataset_get(train, i, &s));
    ASSERT_EQ(em_test_get(s.t[1], 0), first[i]);
    em_dl_sample_release(&s);
  }
  /* whole tensors against the independent reader */
  em_tensor *img = em_dl_idx_load(FMNIST "/train-images-idx3-ubyte.gz");
  em_tensor *lab = em_dl_idx_load(FMNIST "/train-labels-idx1-ubyte.gz");
  ASSERT_SHAPE(img, 60000, 28, 28);
  ASSERT_SHAPE(lab, 60000);
  size_t n;
  unsigned char *ref = ref_read("train-images-idx3-ubyte.gz", &n);
  ASSERT_TRUE(ref && n == 16 + 60000 * 784);
  ASSERT_TRUE(memcmp(ref + 16, em_tensor_data(img), 60000 * 784) == 0);
  free(ref);
  ref = ref_read("train-labels-idx1-ubyte.gz", &n);
  ASSERT_TRUE(ref && n == 8 + 60000);
  ASSERT_TRUE(memcmp(ref + 8, em_tensor_data(lab), 60000) == 0);
  int64_t sum = 0;
  for (int i = 0; i < 60000; i++) sum += ref[8 + i];
  ASSERT_EQ(sum, 270000); /* 6000 images of each class 0..9 */
  free(ref);
  em_tensor_release(img);
  em_tensor_release(lab);
  em_dl_dataset_release(train);
  em_dl_dataset_release(test);
}

EM_TEST_MAIN()
