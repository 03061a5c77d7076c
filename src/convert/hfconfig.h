/* Hugging Face config.json → ds4_hparams (MODEL.md §1, "HF config key").
 *
 * Accepts both spellings found in the wild: the official checkpoint's
 * (compress_ratios, num_hash_layers, rope_scaling) and transformers'
 * (compress_rates + layer_types, mlp_layer_types, rope_parameters.compress);
 * when both are present they must agree.  The reference inference code's
 * flat names (rope_factor, original_seq_len, beta_fast, beta_slow) are
 * accepted as a last resort.  scoring_func must be "sqrtsoftplus".
 *
 * hp->n_mtp is num_nextn_predict_layers (0 if absent); the converter lowers
 * it to 0 when the checkpoint carries no mtp.* tensors.  compress[] gets the
 * L or L+1 entries of the config (the L+1-th is the MTP block's).
 *
 * Errors name the file and the HF key: "config.json: missing key
 * 'hidden_size'", "config.json: num_attention_heads (6) is not divisible by
 * o_groups (4)".  The result has passed ds4_hparams_validate(). */
#ifndef DS4_CONVERT_HFCONFIG_H
#define DS4_CONVERT_HFCONFIG_H

#include <stddef.h>

#include "model/model.h"
#include "util/err.h"

int ds4_hfconfig_load(const char *path, ds4_hparams *hp, ds4_err *err);
/* Same from JSON text; `name` is used in messages. */
int ds4_hfconfig_parse(const char *json, size_t len, const char *name, ds4_hparams *hp, ds4_err *err);

#endif
