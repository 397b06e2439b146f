/* Copy with dtype conversion (every pair of dtypes) and fill.
 *
 * COPY kernels are registered per destination dtype; attrs->i[0] holds the
 * source dtype and picks the loop from a [dst][src] table once per row. */
#include "core/cpu/kernel_impl.h"

/* Conversion of a compute value to each storage type, defined for every
 * input (saturating float -> int). */
#define CV_FLOAT32(v) ((float)(v))
#define CV_FLOAT64(v) ((double)(v))
#define CV_FLOAT16(v) em__f2h((float)(v))
#define CV_BFLOAT16(v) em__f2b((float)(v))
#define CV_BOOL(v) ((v) != 0)

/* Source value as a compute type: floats widen to double when the
 * destination is an integer (saturation needs the range). */
#define SRC_FLOAT32(x) (x)
#define SRC_FLOAT64(x) (x)
#define SRC_FLOAT16(x) em__h2f(x)
#define SRC_BFLOAT16(x) em__b2f(x)
#define SRC_INT8(x) (x)
#define SRC_INT16(x) (x)
#define SRC_INT32(x) (x)
#define SRC_INT64(x) (x)
#define SRC_UINT8(x) (x)
#define SRC_BOOL(x) (x)

#define SRC_IS_FLOAT_FLOAT32 1
#define SRC_IS_FLOAT_FLOAT64 1
#define SRC_IS_FLOAT_FLOAT16 1
#define SRC_IS_FLOAT_BFLOAT16 1
#define SRC_IS_FLOAT_INT8 0
#define SRC_IS_FLOAT_INT16 0
#define SRC_IS_FLOAT_INT32 0
#define SRC_IS_FLOAT_INT64 0
#define SRC_IS_FLOAT_UINT8 0
#define SRC_IS_FLOAT_BOOL 0

/* int destinations: from a float source saturate; from an int source wrap
 * (C conversion to a narrower unsigned type is modular; to a narrower
 * signed type GCC defines it as modular too). */
#define TO_INT(T, F2I, SRCF, x) (SRCF ? F2I((double)(x)) : (T)(x))
#define CV_INT8_S(f, x) TO_INT(int8_t, em__f2i8, f, x)
#define CV_INT16_S(f, x) TO_INT(int16_t, em__f2i16, f, x)
#define CV_INT32_S(f, x) TO_INT(int32_t, em__f2i32, f, x)
#define CV_INT64_S(f, x) TO_INT(int64_t, em__f2i64, f, x)
#define CV_UINT8_S(f, x) TO_INT(uint8_t, em__f2u8, f, x)
#define CV_FLOAT32_S(f, x) CV_FLOAT32(x)
#define CV_FLOAT64_S(f, x) CV_FLOAT64(x)
#define CV_FLOAT16_S(f, x) CV_FLOAT16(x)
#define CV_BFLOAT16_S(f, x) CV_BFLOAT16(x)
#define CV_BOOL_S(f, x) CV_BOOL(x)

#define DEF_CONV(DST, TD, SRC, TS)                                                         \
  static void conv_##DST##_from_##SRC(char **d_, const int64_t *s_, int64_t n_) {          \
    const int64_t so_ = s_[0], si_ = s_[1];                                                \
    if (so_ == (int64_t)sizeof(TD) && si_ == (int64_t)sizeof(TS)) {                        \
      TD *o_ = (TD *)d_[0];                                                                \
      const TS *i_ = (const TS *)d_[1];                                                    \
      for (int64_t k_ = 0; k_ < n_; k_++)                                                  \
        o_[k_] = CV_##DST##_S(SRC_IS_FLOAT_##SRC, SRC_##SRC(i_[k_]));                      \
    } else if (so_ == (int64_t)sizeof(TD) && si_ == 0) {                                   \
      TD *o_ = (TD *)d_[0];                                                                \
      const TD v_ = CV_##DST##_S(SRC_IS_FLOAT_##SRC, SRC_##SRC(*(const TS *)d_[1]));       \
      for (int64_t k_ = 0; k_ < n_; k_++) o_[k_] = v_;                                     \
    } else {                                                                               \
      char *o_ = d_[0];                                                                    \
      const char *i_ = d_[1];                                                              \
      for (int64_t k_ = 0; k_ < n_; k_++, o_ += so_, i_ += si_)                            \
        *(TD *)o_ = CV_##DST##_S(SRC_IS_FLOAT_##SRC, SRC_##SRC(*(const TS *)i_));          \
    }                                                                                      \
  }

/* Same-type copy: memmove when both sides are dense. */
#define DEF_SAME(DT, T)                                                          \
  static void same_##DT(char **d_, const int64_t *s_, int64_t n_) {               \
    const int64_t so_ = s_[0], si_ = s_[1];                                       \
    if (so_ == (int64_t)sizeof(T) && si_ == (int64_t)sizeof(T)) {                 \
      memmove(d_[0], d_[1], (size_t)n_ * sizeof(T));                              \
    } else if (so_ == (int64_t)sizeof(T) && si_ == 0) {                           \
      T *o_ = (T *)d_[0];                                                         \
      const T v_ = *(const T *)d_[1];                                             \
      for (int64_t k_ = 0; k_ < n_; k_++) o_[k_] = v_;                            \
    } else {                                                                      \
      char *o_ = d_[0];                                                           \
      const char *i_ = d_[1];                                                     \
      for (int64_t k_ = 0; k_ < n_; k_++, o_ += so_, i_ += si_)                   \
        *(T *)o_ = *(const T *)i_;                                                \
    }                                                                             \
  }

#define DST_LIST(X)                                                               \
  X(FLOAT32, float) X(FLOAT64, double) X(FLOAT16, uint16_t) X(BFLOAT16, uint16_t) \
  X(INT8, int8_t) X(INT16, int16_t) X(INT32, int32_t) X(INT64, int64_t)           \
  X(UINT8, uint8_t) X(BOOL, bool)

/* conv_<DST>_from_<SRC> for every pair (the diagonal ones go unused: the
 * table below sends same-type copies to same_<DT>). */
#define PAIRS_FOR(DST, TD)                                                          \
  DEF_CONV(DST, TD, FLOAT32, float) DEF_CONV(DST, TD, FLOAT64, double)               \
  DEF_CONV(DST, TD, FLOAT16, uint16_t) DEF_CONV(DST, TD, BFLOAT16, uint16_t)         \
  DEF_CONV(DST, TD, INT8, int8_t) DEF_CONV(DST, TD, INT16, int16_t)                  \
  DEF_CONV(DST, TD, INT32, int32_t) DEF_CONV(DST, TD, INT64, int64_t)                \
  DEF_CONV(DST, TD, UINT8, uint8_t) DEF_CONV(DST, TD, BOOL, bool)

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
DST_LIST(PAIRS_FOR)
#pragma GCC diagnostic pop
DST_LIST(DEF_SAME)

typedef void (*conv_fn)(char **d, const int64_t *s, int64_t n);

/* [dst][src] */
#define ROW_ENTRY(DST, SRC) [EM_##SRC] = conv_##DST##_from_##SRC,
#define ROW(DST, TD)                                                                    \
  [EM_##DST] = {ROW_ENTRY(DST, FLOAT32) ROW_ENTRY(DST, FLOAT64) ROW_ENTRY(DST, FLOAT16)  \
                ROW_ENTRY(DST, BFLOAT16) ROW_ENTRY(DST, INT8) ROW_ENTRY(DST, INT16)      \
                ROW_ENTRY(DST, INT32) ROW_ENTRY(DST, INT64) ROW_ENTRY(DST, UINT8)        \
                ROW_ENTRY(DST, BOOL)},
static conv_fn conv_table[EM_DTYPE_COUNT][EM_DTYPE_COUNT] = {DST_LIST(ROW)};

static void copy_kernel(char **d, const int64_t *s, int64_t n, const em_op_attrs *a,
                        em_dtype dst) {
  em_dtype src = (em_dtype)a->i[0];
  if (src == dst) {
#define SAME(DT, T) \
  case EM_##DT: same_##DT(d, s, n); return;
    switch (dst) {
      DST_LIST(SAME)
      default: return;
    }
#undef SAME
  }
  conv_table[dst][src](d, s, n);
}

#define DEF_COPY_ENTRY(DT, T) \
  static void copy_to_##DT(char **d, const int64_t *s, int64_t n, const em_op_attrs *a) { \
    copy_kernel(d, s, n, a, EM_##DT);                                                     \
  }
DST_LIST(DEF_COPY_ENTRY)

/* ---- fill: operand 0 only; the value is attrs->s ----------------------------- */

#define DEF_FILL(DT, T)                                                        \
  static void fill_##DT(char **d, const int64_t *s, int64_t n, const em_op_attrs *a) { \
    T v;                                                                       \
    em__store_scalar(&v, EM_##DT, a->s);                                       \
    if (s[0] == (int64_t)sizeof(T)) {                                          \
      T *o = (T *)d[0];                                                        \
      for (int64_t k = 0; k < n; k++) o[k] = v;                                \
    } else {                                                                   \
      char *o = d[0];                                                          \
      for (int64_t k = 0; k < n; k++, o += s[0]) *(T *)o = v;                  \
    }                                                                          \
  }
DST_LIST(DEF_FILL)

void em__cpu_register_copy(void) {
#define REG(DT, T)                                                      \
  em__register_kernel(EM_OP_COPY, EM_CPU, EM_##DT, (void *)copy_to_##DT); \
  em__register_kernel(EM_OP_FILL, EM_CPU, EM_##DT, (void *)fill_##DT);
  DST_LIST(REG)
#undef REG
}
