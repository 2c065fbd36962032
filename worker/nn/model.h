/*
 * model: the interface every dense CTR model of maskps implements, and the
 * one place that builds a model by name.
 *
 * A model maps a batch of field embeddings to one logit per example:
 *
 *   E (B, F*D)  [+ w (B, F): the 1-dim LR embeddings, for LR/FM/DeepFM]
 *        -> logits (B)
 *
 * and back: given dlogits (B), it ACCUMULATES (+=) the gradients of its own
 * parameters (in the struct params it registered them in) and of its inputs
 * (dE, dw). The loss is not part of the model (nn_logloss_* in ops.h), nor
 * are the embeddings (rows live on the pserver) nor the AMTL layer, which
 * sits in front of any model (nn/amtl.h).
 *
 * Lifecycle:
 *   struct params *p = params_new();
 *   struct model *m = model_new(&opts, F, D, Bmax, p, err, sizeof err);
 *   params_alloc(p, seed);            // the model's tensors get their init
 *   model_forward(m, E, w, logits, B, true);  // train mode
 *   model_backward(m, dlogits, dE, dw, B);    // after forward of that batch
 *   model_free(m); params_free(p);
 *
 * model_new registers every tensor of the model in p by the name the PyTorch
 * fixtures use (tests/nn/README.md "Tensor names"), with the training init
 * of MODELS.md (Xavier-normal weights, zero biases, LayerNorm gamma 1), so
 * a fixture's parameters copy in by name and a checkpoint is the flat
 * vector. Activations and caches live in the model, sized for Bmax rows:
 * forward and backward with B <= Bmax need no allocation. A model holds
 * the activations of its last forward; backward must follow the forward of
 * the same batch (one model per thread).
 *
 * Threads: with options.threads T > 1 a model splits a batch of B rows
 * into min(T, B / MODEL_SPLIT_MIN_ROWS) contiguous slices (so never a
 * slice of fewer rows; training and evaluation alike) and runs each on its
 * own thread against its own replica of the model (the same
 * tensors registered in a second params set whose values are the caller's
 * and whose gradients are summed into the caller's after backward), with
 * OpenBLAS at one thread meanwhile. Why: OpenBLAS threads only the matrix
 * products; every element-wise op (ReLU, LayerNorm, softmax, products)
 * would run on one core while the other waits, which cost 10-25% of a
 * step at 2 threads (BENCHMARKS.md). The threads share nothing mutable:
 * inputs and values are read-only during a pass, each writes its own rows
 * of logits/dE/dw and its own gradients, and the caller's thread joins
 * them before returning (fork-join inside one call, as OpenBLAS's own
 * threads are; STYLE.md rule 11 is about the process's long-lived
 * threads). The result equals the one-thread result up to the order of
 * the gradient sums (tests/nn/test_model_threads.c). Models whose rows are
 * coupled are not split: BatchNorm (batch statistics) and dropout (the mask
 * depends on the row index); they run on one thread with OpenBLAS at the
 * caller's setting. Each slice holds Bmax / T rows of activations more.
 *
 * Errors: an unknown model name, options that do not fit the model
 * (hidden_units empty for a DNN, reduction ratio <= 0, ...) are outside
 * faults: model_new returns NULL with the reason in err. A shape mismatch
 * after construction (B > Bmax) is our bug and CHECKed.
 */
#ifndef MASKPS_NN_MODEL_H
#define MASKPS_NN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct params;

#define MODEL_MAX_LAYERS 16
#define MODEL_MAX_THREADS 64
/* Rows per thread below which a batch is not split (the hand-off would
 * dominate). */
#define MODEL_SPLIT_MIN_ROWS 128

enum model_kind {
  MODEL_LR,
  MODEL_FM,
  MODEL_DNN,
  MODEL_DEEPFM,
  MODEL_DCN,
  MODEL_DCNV2,
  MODEL_EDCN,
  MODEL_SERMASKNET,
  MODEL_PARAMASKNET,
  MODEL_MASKFUSION,
  MODEL_KIND_COUNT_
};

enum model_dcnv2_structure {
  MODEL_CROSSNET_ONLY,
  MODEL_STACKED,
  MODEL_PARALLEL
};
enum model_bridge { MODEL_BRIDGE_HADAMARD, MODEL_BRIDGE_ADD, MODEL_BRIDGE_CONCAT };

/* Everything that shapes a model. Fields a model does not use are ignored.
 * model_options_default() fills MODELS.md's defaults; model_options_from_
 * config() maps a config's model section onto this. */
struct model_options {
  enum model_kind kind;
  int hidden[MODEL_MAX_LAYERS]; /* MLP hidden widths (DNN, DCN deep part, ...) */
  int nhidden;
  float dropout;       /* on hidden layers, train mode only; 0 = off */
  uint64_t dropout_seed;
  int cross_layers;    /* DCN, DCNv2, EDCN: L */
  enum model_dcnv2_structure dcnv2_structure;
  int low_rank;        /* DCNv2: 0 = full rank W, else rank R of the mixture */
  int num_experts;     /* DCNv2 mixture: K */
  enum model_bridge bridge; /* EDCN */
  float temperature;   /* EDCN regulation softmax: tau */
  bool cross_residual; /* EDCN: keep c_l in the cross layer (MODELS.md) or
                          drop it (FuxiCTR) */
  bool use_bn;         /* BatchNorm1d (FuxiCTR's batch_norm): on the MLP's
                          hidden layers (DNN, DeepFM, DCN, DCNv2), on
                          EDCN's regulation outputs; others ignore it */
  int num_blocks;      /* MaskNet: blocks (serial) or u (parallel) */
  int block_dim[MODEL_MAX_LAYERS]; /* MaskNet: output width of each block */
  float reduction_ratio;           /* MaskNet: r */
  bool emb_layernorm, net_layernorm; /* MaskNet */
  int ctrl_hidden[MODEL_MAX_LAYERS]; /* MaskFusion: hidden widths of each */
  int nctrl;                         /* mask controller; 0 = one linear */
  bool instance_norm; /* MaskFusion: instance norm of E before fusion */
  int threads;        /* compute threads; 0 or 1 = the caller's thread
                         alone; see "Threads" above */
};

struct model;

/* MODELS.md's defaults for a kind. */
void model_options_default(struct model_options *o, enum model_kind kind);
/* Reads cfg's model section. Returns 0, or -1 with err set. */
int model_options_from_config(struct model_options *o,
                              const struct config *cfg, char *err,
                              size_t errlen);
/* "lr", "dnn", "sermasknet", ...; "?" for an unknown kind. */
const char *model_kind_name(enum model_kind k);
/* The kind called name; -1 if none (the caller lists the valid names). */
int model_kind_parse(const char *name);

/* Builds a model for F fields of D floats and batches up to Bmax rows,
 * registering its tensors in params (which must not be allocated yet).
 * Returns NULL with the reason in err for options that do not fit.
 * Caller owns the result; free with model_free(). */
struct model *model_new(const struct model_options *o, int F, int D, int Bmax,
                        struct params *params, char *err, size_t errlen);
void model_free(struct model *m);

/* True if the model takes w (B, F), the 1-dim LR embeddings. */
bool model_uses_lr_weights(const struct model *m);

/* logits (B) from E (B, F*D) and w (B, F) (NULL unless
 * model_uses_lr_weights). train: dropout on, BatchNorm on batch stats. */
void model_forward(struct model *m, const float *E, const float *w,
                   float *logits, int B, bool train);

/* Accumulates parameter gradients (in params) and dE (B, F*D), dw (B, F)
 * from dlogits (B). dE / dw may be NULL when nobody needs them. */
void model_backward(struct model *m, const float *dlogits, float *dE,
                    float *dw, int B);

/* Slices a batch can be split into: options.threads capped by Bmax /
 * MODEL_SPLIT_MIN_ROWS, or 1 when the model is not split (one thread, or
 * BatchNorm/dropout); what a trainer should report as its threads. */
int model_threads(const struct model *m);

/* Multiply-adds of one forward pass per example (for throughput as a
 * fraction of the sgemm roofline); backward is about twice that. */
double model_flops_per_example(const struct model *m);

#endif
