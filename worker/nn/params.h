/*
 * params: a model's dense parameters as one flat buffer with named views
 * (STYLE.md rule 9), their initialisation, and the dense optimizers.
 *
 * A model registers each tensor by name and shape (params_add), then calls
 * params_alloc once: values, gradients and the Adam state are then each ONE
 * allocation of params_len() floats (Adam's m and v one block of 2x), and a
 * tensor is a view at a fixed offset in all of them. So the whole dense model
 * is pushed, pulled, checkpointed, clipped and stepped as one vector, while
 * layers still say params_value(p, id) with the id params_add returned.
 *
 * Each view starts at a multiple of 16 floats (64 bytes, for SIMD); the few
 * padding floats between views stay 0 forever (their gradient is 0, so no
 * optimizer moves them) and are part of the flat vector.
 *
 * Initial values depend only on (seed, tensor name, element index): adding a
 * tensor or reordering registrations leaves the others' values unchanged,
 * and every worker of a run computes the same start.
 *
 * The optimizers follow PyTorch exactly (torch.optim.Adam without amsgrad,
 * torch.optim.SGD without momentum, torch.nn.utils.clip_grad_norm_), so a
 * PyTorch run is a reference. Tensors registered as state (params_add_state:
 * BatchNorm running statistics) live in the buffer for checkpoints but are
 * skipped by the optimizers and the gradient norm.
 *
 * A set can be written to a file and read back by name (params_save,
 * params_load): a dense checkpoint for embedded mode and a warm start from
 * another model's file, with a report of what matched.
 *
 * Not here: embeddings (rows live on the pserver), learning-rate schedules
 * (the caller passes lr every step).
 */
#ifndef MASKPS_NN_PARAMS_H
#define MASKPS_NN_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum params_init {
  PARAMS_ZEROS,          /* 0 (biases) */
  PARAMS_ONES,           /* 1 (LayerNorm gamma) */
  PARAMS_CONST,          /* scale (e.g. Dice alpha, EDCN's gate gamma = 1) */
  PARAMS_NORMAL,         /* N(0, scale^2): scale is the std */
  PARAMS_XAVIER_NORMAL,  /* N(0, std^2), std = scale*sqrt(2/(fan_in+fan_out)) */
  PARAMS_XAVIER_UNIFORM, /* U(-a, a), a = scale*sqrt(6/(fan_in+fan_out)) */
};

#define PARAMS_NAME_MAX 63

/* One named tensor: count stacked matrices of (rows, cols). */
struct params_view {
  char name[PARAMS_NAME_MAX + 1];
  int count, rows, cols; /* shape (count, rows, cols); a vector is (1,1,n) */
  size_t off;            /* offset in the flat buffers (floats) */
  size_t n;              /* elements: count * rows * cols */
  enum params_init init;
  float scale; /* std, gain or constant, per init */
  bool state;  /* not trained (running statistics) */
};

struct params {
  int count, cap;            /* registered views */
  struct params_view *views; /* [count] */
  size_t len;                /* floats in each flat buffer, padding included */
  float *values;             /* [len], after params_alloc */
  float *grads;              /* [len] */
  float *adam;               /* [2*len]: m then v */
  uint64_t step;             /* Adam steps taken (bias correction) */
  bool shared;               /* values borrowed from another set (see
                                params_alloc_shared); grads are our own */
};

/* An empty set. Caller owns it; free with params_free(). */
struct params *params_new(void);
/* Frees the set and its buffers; NULL is fine. */
void params_free(struct params *p);

/* Registers a trained tensor of shape (count, rows, cols) and returns its id
 * (0, 1, ... in order). Xavier treats each of the count matrices as one
 * linear layer's weight with fan_in = cols, fan_out = rows (torch's
 * convention for an (O, I) weight; DCN-Mix initialises its expert stacks
 * matrix by matrix the same way); a logit layer's (1, I) weight is rows = 1.
 * CHECKs: before params_alloc, a new name of at most PARAMS_NAME_MAX chars,
 * positive shape. */
int params_add(struct params *p, const char *name, int count, int rows,
               int cols, enum params_init init, float scale);
/* The same for a tensor the optimizers must not touch (running stats). */
int params_add_state(struct params *p, const char *name, int count, int rows,
                     int cols, enum params_init init, float scale);

/* Allocates the flat buffers and initialises every value from seed; grads
 * and Adam state start at 0, step at 0. Call once, after the last add. */
void params_alloc(struct params *p, uint64_t seed);

/* For a replica of a model (model.c's data-parallel threads): p's tensors
 * must appear in owner, in the same order, with the same sizes and the
 * same spacing (the same model registered the same way; other tensors may
 * come before or after them in owner, e.g. the AMTL nets), and owner must
 * be allocated. p's values become that stretch of owner's (borrowed: p
 * never writes or frees them), its gradients its own zeroed buffer; no Adam
 * state. Returns the offset of p's first float in owner's buffers. */
size_t params_alloc_shared(struct params *p, const struct params *owner);
/* Re-runs the initialisation of every tensor (values only) from seed. */
void params_init_values(struct params *p, uint64_t seed);

/* The id of the tensor called name, or -1 if there is none. */
int params_find(const struct params *p, const char *name);
/* The view of tensor id; borrowed, valid while p lives. CHECKs the id. */
const struct params_view *params_view(const struct params *p, int id);
/* Its values / gradients inside the flat buffers (after params_alloc). */
float *params_value(const struct params *p, int id);
float *params_grad(const struct params *p, int id);

/* Sets every gradient to 0 (before each step's backward passes). */
void params_zero_grad(struct params *p);

/* Global L2 norm of the trained gradients, computed in double; if it exceeds
 * max_norm, scales those gradients by max_norm / (norm + 1e-6), as
 * torch.nn.utils.clip_grad_norm_. Returns the norm BEFORE clipping; a
 * non-finite return means a NaN/Inf gradient (the gradients are then left
 * unscaled: check and stop). max_norm <= 0 only measures. */
double params_clip_grad_norm(struct params *p, double max_norm);

/* Adam hyper-parameters (torch defaults: 0.9, 0.999, 1e-8, 0). */
struct params_adam {
  float lr;           /* learning rate for this step */
  float beta1, beta2; /* decay of the first and second moment */
  float eps;          /* added to sqrt(v_hat) */
  float weight_decay; /* L2 added to the gradient (torch Adam, not AdamW) */
};
/* {lr, 0.9, 0.999, 1e-8, 0}. */
struct params_adam params_adam_default(float lr);

/* One Adam step over every trained tensor with the current gradients:
 * step += 1, then with t = step,
 *   g = grad + wd*w; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
 *   w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
void params_adam_step(struct params *p, const struct params_adam *cfg);

/* The same update on raw arrays (n floats each) at step t >= 1: for a dense
 * shard that holds its own slice of the flat vector. */
void params_adam_kernel(float *w, const float *g, float *m, float *v, size_t n,
                        uint64_t t, const struct params_adam *cfg);

/* Plain SGD over every trained tensor: w -= lr * grad. */
void params_sgd_step(struct params *p, float lr);

/* ---- files ----
 * Layout (version 1, little-endian):
 *   magic   8 bytes  "MPSDENS" + NUL
 *   version u32      PARAMS_FILE_VERSION
 *   count   u32      tensors
 *   flags   u32      bit 0: Adam state follows each tensor's values
 *   step    u64      Adam steps taken
 *   count times:
 *     name_len u16, name (no NUL), count u32, rows u32, cols u32,
 *     values f32[n] (then m f32[n], v f32[n] with bit 0)
 *   checksum u64     FNV-1a 64 of every byte before it
 */
#define PARAMS_FILE_VERSION 1

/* Writes every tensor (and the Adam state and step when with_state) to path,
 * through path.tmp and a rename so a crash never leaves half a file.
 * Returns 0, or -1 with err naming the path and the system's reason. */
int params_save(const struct params *p, const char *path, bool with_state,
                char *err, size_t errlen);

/* Reads path and copies each tensor whose name and shape match into p's
 * values (and the Adam state and step when with_state and the file has
 * them); every other tensor of p keeps its current values. report receives
 * what happened, e.g. "loaded 3 of 4; shape differs: fc.weight (file
 * 1x1x28, model 1x1x36); not in file: ln.bias; not in model: old.w"
 * (truncated to replen). Returns the number of tensors loaded (0 is not an
 * error: the caller decides), or -1 with err for a file that cannot be read
 * or is not a valid params file (wrong magic, other version, truncated,
 * checksum mismatch, malformed entry). Trusts no byte of the file. */
int params_load(struct params *p, const char *path, bool with_state,
                char *report, size_t replen, char *err, size_t errlen);

#endif
