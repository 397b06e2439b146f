/* ember nn — modules, functional layers, losses, initialisation.
 *
 * A module holds ordered named parameters (leaf tensors that require
 * grad), buffers (e.g. BatchNorm running statistics) and child modules, a
 * forward function and a train/eval flag. Names follow PyTorch's dotted
 * convention ("features.0.weight") so state dicts are interchangeable by
 * name with PyTorch checkpoints (see nn/checkpoint.h).
 *
 *     em_module *net = em_nn_sequential(3, (em_module *[]){
 *         em_nn_linear(784, 128, true), em_nn_relu(), em_nn_linear(128, 10, true)});
 *     em_tensor *logits = em_module_forward(net, x);               // [B, 10]
 *     em_tensor *loss = em_nn_f_cross_entropy(logits, y, NULL);    // mean
 *     em_backward(loss, NULL, false);
 *     ...
 *     em_module_release(net);   // a container owns what it was given
 *
 * Ownership: constructors return a new module reference (NULL on error).
 * Containers (sequential, module list/dict, register_module) take over the
 * caller's reference to each child they are given ("steal"), so the
 * one-expression style above does not leak. Tensors passed in are
 * borrowed (retained when kept); tensors returned are new references.
 * Errors as everywhere in ember: NULL / em_status with em_last_error().
 *
 * Layers and the functional forms live in nn/layers.h; losses in
 * nn/losses.h; initialisation in nn/init.h; optimizers and schedulers in
 * nn/optim.h; safetensors checkpoints in nn/checkpoint.h. This header
 * includes them all.
 */
#ifndef EMBER_NN_H
#define EMBER_NN_H

#include "autograd/autograd.h"
#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_module em_module;

/* What a kind of module does. forward takes nin inputs and produces one
 * output (new reference); modules with other arities (Bilinear: 2 inputs)
 * check nin themselves. extra_repr (may be NULL) returns a malloc'd string
 * for em_module_repr ("in_features=784, out_features=10, bias=True").
 * destroy_impl (may be NULL) frees the impl pointer given at creation. */
typedef struct em_module_ops {
  const char *type_name;
  em_tensor *(*forward)(em_module *m, int nin, em_tensor *const *in);
  char *(*extra_repr)(em_module *m);
  void (*destroy_impl)(void *impl);
} em_module_ops;

/* ---- the module object --------------------------------------------------- */

/* A new module of the given kind with impl as its private state. */
EM_API em_module *em_module_create(const em_module_ops *ops, void *impl);
EM_API em_module *em_module_retain(em_module *m);
EM_API void em_module_release(em_module *m); /* NULL is fine */
EM_API void *em_module_impl(em_module *m);
EM_API const char *em_module_type_name(const em_module *m);

/* Registration. Names are unique per module among parameters, buffers and
 * children, non-empty and without '.'. A parameter becomes a leaf that
 * requires grad (t may be NULL: a declared-but-absent parameter such as
 * bias=False, skipped by parameters() and state_dict). Buffers are saved
 * in state_dict when persistent. register_module steals the reference to
 * child. Re-registering a name replaces the old entry. */
EM_API em_status em_module_register_parameter(em_module *m, const char *name, em_tensor *t);
EM_API em_status em_module_register_buffer(em_module *m, const char *name, em_tensor *t,
                                           bool persistent);
EM_API em_status em_module_register_module(em_module *m, const char *name, em_module *child);

/* Lookups by local name (no dots): borrowed pointers, NULL if absent. */
EM_API em_tensor *em_module_parameter(em_module *m, const char *name);
EM_API em_tensor *em_module_buffer(em_module *m, const char *name);
EM_API em_module *em_module_child(em_module *m, const char *name);
EM_API int em_module_num_children(const em_module *m);
EM_API em_module *em_module_child_at(em_module *m, int i); /* borrowed */
EM_API const char *em_module_child_name_at(const em_module *m, int i);
/* Replaces the value of an existing parameter or buffer by dotted path
 * ("features.0.weight"); the new tensor must have the same shape. Used by
 * the DDP reducer and the Python layer. */
EM_API em_status em_module_set_tensor(em_module *m, const char *path, em_tensor *t);

/* Runs the module. Single-input convenience for em_module_forward_n. */
EM_API em_tensor *em_module_forward(em_module *m, em_tensor *x);
EM_API em_tensor *em_module_forward_n(em_module *m, int nin, em_tensor *const *in);

/* train(true) / eval (train(false)), recursively. */
EM_API void em_module_train(em_module *m, bool training);
EM_API bool em_module_is_training(const em_module *m);

/* Clears every parameter's .grad (set_to_none) or zeroes it in place. */
EM_API em_status em_module_zero_grad(em_module *m, bool set_to_none);

/* Calls fn on every module, children before their parent (as PyTorch's
 * apply); stops at the first error. */
EM_API em_status em_module_apply(em_module *m, em_status (*fn)(em_module *m, void *ctx), void *ctx);

/* ---- named tensor lists -------------------------------------------------------- */

/* An ordered list of (dotted name, tensor). Tensors are references owned
 * by the list; names are owned by the list. */
typedef struct em_named_tensors {
  int n;
  char **names;
  em_tensor **tensors;
} em_named_tensors;

EM_API void em_named_tensors_free(em_named_tensors *l); /* frees the contents */

/* Parameters in registration order, depth first, each shared tensor once
 * (named by its first occurrence), prefixed with the children's names. */
EM_API em_status em_module_named_parameters(em_module *m, em_named_tensors *out);
EM_API em_status em_module_named_buffers(em_module *m, em_named_tensors *out);
EM_API int64_t em_module_num_parameters(em_module *m); /* total elements */

/* ---- state dicts ------------------------------------------------------------------ */

/* An ordered map from dotted names to tensors (references). */
typedef struct em_state_dict em_state_dict;

EM_API em_state_dict *em_state_dict_create(void);
EM_API void em_state_dict_free(em_state_dict *sd);
/* Inserts or replaces name (t retained). */
EM_API em_status em_state_dict_set(em_state_dict *sd, const char *name, em_tensor *t);
EM_API em_tensor *em_state_dict_get(const em_state_dict *sd, const char *name); /* borrowed */
EM_API int em_state_dict_size(const em_state_dict *sd);
EM_API const char *em_state_dict_name_at(const em_state_dict *sd, int i);
EM_API em_tensor *em_state_dict_tensor_at(const em_state_dict *sd, int i); /* borrowed */
/* Copies every entry of src into dst under "prefix" + name. */
EM_API em_status em_state_dict_merge(em_state_dict *dst, const em_state_dict *src,
                                     const char *prefix);

/* Parameters and persistent buffers by dotted name; the tensors share
 * storage with the module's (detached, as PyTorch's state_dict). */
EM_API em_state_dict *em_module_state_dict(em_module *m);
/* Copies values into the module's tensors in place (no autograd). With
 * strict, any missing, unexpected or shape-mismatched key is an error whose
 * message lists them all ("missing keys: [...]; unexpected keys: [...];
 * size mismatch for fc.weight: copying a param with shape [10, 5] from
 * checkpoint, the shape in current model is [10, 4]") and nothing is
 * loaded. Without strict, missing and unexpected keys are skipped but
 * shape mismatches are still errors. */
EM_API em_status em_module_load_state_dict(em_module *m, const em_state_dict *sd, bool strict);

/* PyTorch-style repr:
 *   Sequential(
 *     (0): Linear(in_features=784, out_features=128, bias=True)
 *     (1): ReLU()
 *   )
 * malloc'd; the caller frees it. */
EM_API char *em_module_repr(em_module *m);

#ifdef __cplusplus
}
#endif

#include "nn/checkpoint.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/losses.h"
#include "nn/optim.h"

#endif
