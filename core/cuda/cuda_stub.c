/* The public CUDA functions (core/cuda/ember_cuda.h) in a build without
 * CUDA support: each reports that CUDA is not available, so code written
 * for both kinds of build compiles and fails cleanly. Compiled only when
 * CUDA support is off (core/CMakeLists.txt). */
#include "core/core_impl.h"
#include "core/cuda/ember_cuda.h"

#define NO_CUDA "ember was built without CUDA support"

static em_status no_cuda(const char *op) {
  return em__set_error(EM_ERR_DEVICE, "%s: %s", op, NO_CUDA);
}

bool em_cuda_is_available(void) { return false; }
bool em_cudnn_is_available(void) { return false; }
int em_cuda_device_count(void) { return 0; }
const char *em_cuda_unavailable_reason(void) { return NO_CUDA; }
em_status em_cuda_set_device(int device) { return no_cuda("set_device"); }
int em_cuda_current_device(void) { return -1; }
em_status em_cuda_device_name(int device, char *buf, size_t size) {
  if (buf && size) buf[0] = '\0';
  return no_cuda("device_name");
}
em_status em_cuda_synchronize(int device) { return no_cuda("synchronize"); }

em_cuda_stream *em_cuda_stream_create(int device, int priority) {
  no_cuda("stream_create");
  return NULL;
}
em_status em_cuda_stream_destroy(em_cuda_stream *s) { return s ? no_cuda("stream_destroy") : EM_OK; }
em_cuda_stream *em_cuda_default_stream(int device) {
  no_cuda("default_stream");
  return NULL;
}
em_cuda_stream *em_cuda_current_stream(int device) {
  no_cuda("current_stream");
  return NULL;
}
em_status em_cuda_set_current_stream(em_cuda_stream *s) { return no_cuda("set_current_stream"); }
int em_cuda_stream_device(const em_cuda_stream *s) { return -1; }
em_status em_cuda_stream_synchronize(em_cuda_stream *s) { return no_cuda("stream_synchronize"); }
bool em_cuda_stream_query(em_cuda_stream *s) { return true; }
em_status em_cuda_stream_wait_stream(em_cuda_stream *s, em_cuda_stream *other) {
  return no_cuda("stream_wait_stream");
}
void *em_cuda_stream_handle(em_cuda_stream *s) { return NULL; }

em_cuda_event *em_cuda_event_create(bool enable_timing) {
  no_cuda("event_create");
  return NULL;
}
void em_cuda_event_destroy(em_cuda_event *e) {}
em_status em_cuda_event_record(em_cuda_event *e, em_cuda_stream *s) {
  return no_cuda("event_record");
}
em_status em_cuda_stream_wait_event(em_cuda_stream *s, em_cuda_event *e) {
  return no_cuda("stream_wait_event");
}
em_status em_cuda_event_synchronize(em_cuda_event *e) { return no_cuda("event_synchronize"); }
bool em_cuda_event_query(em_cuda_event *e) { return true; }
em_status em_cuda_event_elapsed_ms(em_cuda_event *start, em_cuda_event *end, float *ms) {
  return no_cuda("event_elapsed_ms");
}

em_allocator *em_cuda_allocator(void) { return NULL; }
em_allocator *em_cuda_pinned_allocator(void) { return NULL; }
em_status em_cuda_memory_stats_get(int device, em_cuda_memory_stats *out) {
  if (out) memset(out, 0, sizeof *out);
  return no_cuda("memory_stats");
}
em_status em_cuda_reset_peak_memory_stats(int device) { return no_cuda("reset_peak_memory_stats"); }
em_status em_cuda_empty_cache(void) { return EM_OK; }
em_status em_tensor_record_stream(em_tensor *t, em_cuda_stream *s) {
  return no_cuda("record_stream");
}

em_tensor *em_tensor_pin_memory(em_tensor *t) {
  no_cuda("pin_memory");
  return NULL;
}
bool em_tensor_is_pinned(const em_tensor *t) { return false; }
em_tensor *em_tensor_to_device_async(em_tensor *t, em_device dev, bool non_blocking) {
  return em_tensor_to_device(t, dev);
}

