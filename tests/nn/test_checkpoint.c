/* safetensors: round trips, a file whose bytes the test writes itself,
 * atomic replacement, and hostile files. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

static char dir[256];

static void setup(void) {
  if (dir[0]) return;
  snprintf(dir, sizeof dir, "/tmp/ember_ckpt_%d", (int)getpid());
  mkdir(dir, 0700);
}

static const char *file(const char *name) {
  static char buf[512];
  setup();
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

/* Writes raw bytes: an 8-byte little-endian header length, the header,
 * then data. */
static void write_raw(const char *path, const char *header, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  uint64_t len = strlen(header);
  fwrite(&len, 8, 1, f);
  fwrite(header, 1, len, f);
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

EM_TEST(round_trip_every_dtype) {
  em_state_dict *sd = em_state_dict_create();
  for (int d = 0; d < EM_DTYPE_COUNT; d++) {
    em_tensor *t = em_tensor_arange(em_scalar_int(0), em_scalar_int(6), em_scalar_int(1), (em_dtype)d);
    if (d == EM_BOOL) {
      em_tensor_release(t);
      t = em_tensor_from_data((bool[]){1, 0, 1, 1, 0, 0}, EM_DIMS(6), EM_BOOL);
    }
    em_tensor *v = em_tensor_view(t, EM_DIMS(2, 3));
    char name[32];
    snprintf(name, sizeof name, "layer.%s", em_dtype_name((em_dtype)d));
    ASSERT_OK(em_state_dict_set(sd, name, v));
    em_tensor_release(v), em_tensor_release(t);
  }
  em_tensor *scalar = em_tensor_scalar(em_scalar_float(2.5), EM_FLOAT64);
  em_tensor *empty = em_tensor_zeros(EM_DIMS(0, 4), EM_FLOAT32);
  em_tensor *base = em_tensor_arange(em_scalar_int(0), em_scalar_int(12), em_scalar_int(1), EM_FLOAT32);
  em_tensor *m = em_tensor_view(base, EM_DIMS(3, 4));
  em_tensor *tr = em_tensor_transpose(m, 0, 1); /* saved contiguous */
  ASSERT_OK(em_state_dict_set(sd, "scalar", scalar));
  ASSERT_OK(em_state_dict_set(sd, "empty", empty));
  ASSERT_OK(em_state_dict_set(sd, "transposed", tr));
  const char *keys[] = {"format"}, *vals[] = {"pt"};
  ASSERT_OK(em_save_safetensors(file("a.safetensors"), sd, 1, keys, vals));
  em_state_dict *back;
  ASSERT_OK(em_load_safetensors(file("a.safetensors"), &back));
  ASSERT_EQ(em_state_dict_size(back), em_state_dict_size(sd));
  for (int i = 0; i < em_state_dict_size(sd); i++) {
    ASSERT_STREQ(em_state_dict_name_at(back, i), em_state_dict_name_at(sd, i));
    bool eq = false;
    ASSERT_OK(em_tensor_equal(em_state_dict_tensor_at(back, i), em_state_dict_tensor_at(sd, i), &eq));
    ASSERT_TRUE(eq);
    ASSERT_EQ(em_state_dict_tensor_at(back, i)->dtype, em_state_dict_tensor_at(sd, i)->dtype);
  }
  char *fmt;
  ASSERT_OK(em_safetensors_metadata(file("a.safetensors"), "format", &fmt));
  ASSERT_STREQ(fmt, "pt");
  free(fmt);
  ASSERT_OK(em_safetensors_metadata(file("a.safetensors"), "missing", &fmt));
  ASSERT_TRUE(fmt == NULL);
  em_state_dict_free(back), em_state_dict_free(sd);
  em_tensor_release(scalar), em_tensor_release(empty), em_tensor_release(base);
  em_tensor_release(m), em_tensor_release(tr);
}

/* The header is the documented JSON; data little-endian after it. */
EM_TEST(written_bytes_follow_the_format) {
  em_state_dict *sd = em_state_dict_create();
  em_tensor *t = em_tensor_from_data((float[]){1, -2}, EM_DIMS(2), EM_FLOAT32);
  ASSERT_OK(em_state_dict_set(sd, "w", t));
  ASSERT_OK(em_save_safetensors(file("b.safetensors"), sd, 0, NULL, NULL));
  FILE *f = fopen(file("b.safetensors"), "rb");
  uint64_t len;
  ASSERT_EQ(fread(&len, 8, 1, f), 1);
  ASSERT_EQ(len % 8, 0);
  char hdr[256] = {0};
  ASSERT_EQ(fread(hdr, 1, len, f), len);
  ASSERT_TRUE(strncmp(hdr, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 52) == 0);
  float data[2];
  ASSERT_EQ(fread(data, 4, 2, f), 2);
  ASSERT_TRUE(data[0] == 1 && data[1] == -2);
  ASSERT_TRUE(fgetc(f) == EOF);
  fclose(f);
  em_tensor_release(t), em_state_dict_free(sd);
}

/* A file the test writes byte by byte, as another tool would. */
EM_TEST(loads_a_hand_written_file) {
  int64_t ints[3] = {7, -1, 1LL << 40};
  uint16_t bf[2] = {0x3f80, 0xc040}; /* 1.0, -3.0 */
  unsigned char data[24 + 4];
  memcpy(data, ints, 24);
  memcpy(data + 24, bf, 4);
  write_raw(file("c.safetensors"),
            "{\"__metadata__\":{\"who\":\"test\"},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,1],"
            "\"data_offsets\":[24,28]},\"a\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}}",
            data, sizeof data);
  em_state_dict *sd;
  ASSERT_OK(em_load_safetensors(file("c.safetensors"), &sd));
  ASSERT_EQ(em_state_dict_size(sd), 2);
  em_tensor *a = em_state_dict_get(sd, "a"), *b = em_state_dict_get(sd, "b");
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->dtype, EM_INT64);
  ASSERT_EQ(((int64_t *)em_tensor_data(a))[2], 1LL << 40);
  ASSERT_SHAPE(b, 2, 1);
  ASSERT_TENSOR_CLOSE(b, ((double[]){1, -3}), 0, 0);
  em_state_dict_free(sd);
}

EM_TEST(hostile_files_are_refused) {
  struct { const char *name, *header; size_t ndata; em_status st; const char *msg; } cases[] = {
      {"json", "{\"a\": [1, 2", 0, EM_ERR_INVALID, "not a JSON object"},
      {"array", "[1, 2]", 0, EM_ERR_INVALID, "not a JSON object"},
      {"dtype", "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16, EM_ERR_INVALID, "unsupported dtype"},
      {"bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, EM_ERR_INVALID, "need 12 bytes but data_offsets span 8"},
      {"bounds", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, EM_ERR_INVALID, "outside the 8 data bytes"},
      {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, EM_ERR_INVALID, "overlap"},
      {"absurd", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1000000000000,1000000000000],\"data_offsets\":[0,8]}}", 8, EM_ERR_INVALID, "absurd shape"},
      {"negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, EM_ERR_INVALID, "invalid shape"},
      {"offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, EM_ERR_INVALID, "invalid data_offsets"},
      {"missing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, EM_ERR_INVALID, "needs dtype, shape and data_offsets"},
      {"dup", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, EM_ERR_INVALID, "not a JSON object"},
      {"bool", "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, EM_ERR_INVALID, "bool byte"},
      {"meta", "{\"__metadata__\":3}", 0, EM_ERR_INVALID, "__metadata__ must be an object"},
  };
  unsigned char junk[32];
  memset(junk, 2, sizeof junk);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_raw(file(cases[i].name), cases[i].header, junk, cases[i].ndata);
    em_state_dict *sd = (em_state_dict *)1;
    ASSERT_ERR(em_load_safetensors(file(cases[i].name), &sd), cases[i].st, cases[i].msg);
    ASSERT_TRUE(sd == NULL);
  }
  /* header length past the end, and a file too short for a length */
  FILE *f = fopen(file("len"), "wb");
  uint64_t huge = 1ULL << 60;
  fwrite(&huge, 8, 1, f);
  fwrite("{}", 1, 2, f);
  fclose(f);
  em_state_dict *sd;
  ASSERT_ERR(em_load_safetensors(file("len"), &sd), EM_ERR_IO, "runs past the end of the file");
  f = fopen(file("short"), "wb");
  fwrite("abc", 1, 3, f);
  fclose(f);
  ASSERT_ERR(em_load_safetensors(file("short"), &sd), EM_ERR_IO, "truncated");
  ASSERT_ERR(em_load_safetensors(file("does-not-exist"), &sd), EM_ERR_IO, "cannot open");
  /* a FIFO without a writer is refused at once, not waited on; so is a directory */
  ASSERT_EQ(mkfifo(file("fifo"), 0600), 0);
  alarm(20);
  ASSERT_ERR(em_load_safetensors(file("fifo"), &sd), EM_ERR_IO, "is not a regular file");
  alarm(0);
  ASSERT_ERR(em_load_safetensors(dir, &sd), EM_ERR_IO, "is not a regular file");
}

/* A writer killed in the middle leaves the old checkpoint intact. */
EM_TEST(crash_mid_write_keeps_the_old_file) {
  const char *path = file("atomic.safetensors");
  em_state_dict *sd = em_state_dict_create();
  em_tensor *small = em_tensor_full(EM_DIMS(4), em_scalar_float(42), EM_FLOAT32);
  ASSERT_OK(em_state_dict_set(sd, "x", small));
  ASSERT_OK(em_save_safetensors(path, sd, 0, NULL, NULL));
  em_state_dict_free(sd);
  pid_t pid = fork();
  if (pid == 0) {
    em_state_dict *big = em_state_dict_create();
    em_tensor *t = em_tensor_zeros(EM_DIMS(64, 1024, 1024), EM_FLOAT32); /* 256 MiB */
    em_state_dict_set(big, "x", t);
    em_save_safetensors(path, big, 0, NULL, NULL);
    _exit(0);
  }
  usleep(300 * 1000);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  em_state_dict *back;
  ASSERT_OK(em_load_safetensors(path, &back));
  ASSERT_TENSOR_CLOSE(em_state_dict_get(back, "x"), ((double[]){42, 42, 42, 42}), 0, 0);
  em_state_dict_free(back);
  em_tensor_release(small);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ASSERT_EQ(system(cmd), 0);
}

EM_TEST_MAIN()
