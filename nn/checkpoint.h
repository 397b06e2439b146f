/* ember checkpoints — state dicts as safetensors files.
 *
 * The format (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [10, 5], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {"key": "value"}}
 * then the raw little-endian data, each tensor's bytes at [b, e) relative
 * to the end of the header. Files written by ember load in the safetensors
 * library and vice versa.
 *
 * Writes are atomic: the data goes to a temporary file in the same folder,
 * which is fsync'd and renamed over the target (and the folder fsync'd),
 * so a crash mid-write leaves the old checkpoint intact. Loading refuses a
 * truncated, corrupt or hostile file (header length past the end, bad
 * JSON, unknown dtype, shape/bytes mismatch, offsets out of bounds or
 * overlapping, absurd sizes) with EM_ERR_IO or EM_ERR_INVALID and a message
 * naming the file and the problem.
 */
#ifndef EMBER_NN_CHECKPOINT_H
#define EMBER_NN_CHECKPOINT_H

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Saves sd (and optional string metadata: nmeta key/value pairs). */
EM_API em_status em_save_safetensors(const char *path, const em_state_dict *sd, int nmeta,
                                     const char *const *meta_keys,
                                     const char *const *meta_values);
/* Loads a file into a new state dict (*out); metadata values can be read
 * with em_safetensors_metadata on the same path. */
EM_API em_status em_load_safetensors(const char *path, em_state_dict **out);
/* The value of one metadata key as a malloc'd string (*value NULL if the
 * key is absent). */
EM_API em_status em_safetensors_metadata(const char *path, const char *key, char **value);

#ifdef __cplusplus
}
#endif
#endif
