"""Every key SAELens has written into ``cfg.json`` (v1 to v6, top level or ``metadata``), and
what labeler does with it.  A key in none of these tables is refused by name: it might change
the encoding, and ignoring it silently could be wrong.

Gathered from the config dataclasses of every SAELens release (``LanguageModelSAERunnerConfig``,
``SAEConfig`` and its architecture subclasses, ``TrainingSAEConfig``, ``SAEMetadata``), which is
what its runners and ``save_model`` serialise.
"""

from __future__ import annotations

HONOURED: dict[str, str] = {
    "architecture": "picks the encode formula (unknown or unencodable values are refused)",
    "d_in": "checked against W_enc and the hookpoint width",
    "d_sae": "checked against W_enc",
    "d_out": "transcoders: checked against W_dec",
    "expansion_factor": "<= v3 cfgs without d_sae: d_sae = expansion_factor * d_in, checked",
    "dtype": "must be a float type SAELens knows; encoding runs in float32",
    "apply_b_dec_to_input": "subtract b_dec before encoding (absent: true, SAELens's default)",
    "normalize_activations": "none / constant_norm_rescale / layer_norm / expected_average_only_in "
                             "(with the release's norm_scaling_factor); covariance_whitening is refused",
    "norm_scaling_factor": "labeler: an expected_average_only_in factor declared in the cfg itself",
    "reshape_activations": "hook_z: heads flattened, which a Hugging Face o_proj input already is",
    "k": "TopK / AbsTopK: latents kept per token",
    "activation_fn": "relu, topk (k in activation_fn_kwargs) or tanh-relu (SAELens 5.x)",
    "activation_fn_str": "the same, before SAELens 6",
    "activation_fn_kwargs": "k for topk (other arguments are refused)",
    "rescale_acts_by_decoder_norm": "TopK/AbsTopK/BatchTopK: pre-activations times ||W_dec[i]||",
    "hook_name": "where it reads (a TransformerLens name, or a module path for AutoModelForCausalLM)",
    "hook_point": "the same, before SAELens 4",
    "hf_hook_name": "where it reads, as a Hugging Face module path; preferred over hook_name",
    "hook_head_index": "a single head's z: refused unless null",
    "hook_point_head_index": "the same, before SAELens 4",
    "model_class_name": "HookedTransformer (TransformerLens names) or AutoModelForCausalLM (module names)",
    "model_from_pretrained_kwargs": "TransformerLens processing: centre_writing_weights honoured, see TL_KWARGS",
    "model_name": "decides whether TransformerLens centred the residual stream (LayerNorm models only)",
    "sae_lens_version": "picks the defaults of the version that wrote the cfg",
    "metadata": "SAELens 6 keeps the model-side keys here; each is checked against these tables",
    "neuronpedia_id": "recorded; names the SAE",
    "hook_name_out": "transcoders: where they write (recorded)",
    "hook_head_index_out": "transcoders: recorded",
    "hf_hook_name_out": "transcoders: where they write (recorded)",
    "hook_io": "labeler train-sae: the module's input or output",
}

_INERT_GROUPS: dict[str, tuple[str, ...]] = {
    "what the training data looked like (no effect on the encode math)": (
        "context_size", "prepend_bos", "exclude_special_tokens", "sequence_separator_token",
        "disable_concat_sequences", "seqpos_slice", "dataset_path", "dataset_trust_remote_code",
        "is_dataset_tokenized", "streaming", "use_chat_formatting", "use_cached_activations",
        "cached_activations_path", "activations_mixing_fraction", "n_batches_in_buffer", "store_batch_size",
        "store_batch_size_prompts", "prefetch_llm_batches", "model_kwargs",
    ),
    "provenance and run bookkeeping": (
        "sae_lens_training_version", "device", "act_store_device", "llm_device", "hook_layer", "hook_point_layer",
        "hook_eval", "hook_point_eval", "hook_names", "hook_head_indices", "saes", "sae", "training_architecture",
        "training_architecture_details", "l0", "num_dead_features", "run_name", "seed", "verbose", "logger",
        "checkpoint_path", "output_path", "n_checkpoints", "save_final_checkpoint", "resume", "resume_from_checkpoint",
        "from_pretrained_path", "log_to_wandb", "log_activations_store_to_wandb", "log_optimizer_state_to_wandb",
        "wandb_project", "wandb_entity", "wandb_id", "wandb_log_frequency", "eval_every_n_wandb_logs", "evaluator",
        "n_eval_batches", "n_eval_seqs", "eval_batch_size_prompts", "compile_llm", "compile_sae", "llm_compilation_mode",
        "sae_compilation_mode", "autocast", "autocast_lm", "training_tokens", "finetuning_tokens",
        "total_training_tokens", "total_training_steps", "total_training_samples", "train_batch_size",
        "train_batch_size_tokens", "train_batch_size_samples", "n_batches_for_norm_estimate",
    ),
    "training-only losses, initialisation and optimiser settings": (
        "adam_beta1", "adam_beta2", "lr", "lr_scheduler_name", "lr_warm_up_steps", "lr_end", "lr_decay_steps",
        "n_restart_cycles", "finetuning_method", "l1_coefficient", "l1_warm_up_steps", "l0_coefficient",
        "l0_warm_up_steps", "lp_norm", "mse_loss_normalization", "scale_sparsity_penalty_by_decoder_norm",
        "use_ghost_grads", "feature_sampling_window", "dead_feature_window", "dead_feature_threshold",
        "aux_loss_coefficient", "pre_act_loss_coefficient", "topk_threshold_lr", "jumprelu_bandwidth",
        "jumprelu_init_threshold", "jumprelu_sparsity_loss_mode", "jumprelu_tanh_scale", "jumprelu_ste_to_input",
        "target_l0", "matryoshka_widths", "use_matryoshka_aux_loss", "b_dec_init_method", "decoder_orthogonal_init",
        "decoder_heuristic_init", "decoder_heuristic_init_norm", "decoder_init_norm", "init_encoder_as_decoder_transpose",
        "noise_scale", "normalize_sae_decoder",
    ),
    "decode side only (labeler never decodes)": ("finetuning_scaling_factor", "use_sparse_activations"),
}
INERT: dict[str, str] = {key: why for why, keys in _INERT_GROUPS.items() for key in keys}

REFUSED: dict[str, str] = {
    key: "an option of the temporal / matching-pursuit architectures, which cannot be encoded token by token"
    for key in ("n_heads", "n_attn_layers", "bottleneck_factor", "sae_diff_type", "kval_topk", "tied_weights",
                "activation_normalization_factor", "max_iterations", "residual_threshold", "stop_on_duplicate_support")
}

KNOWN: dict[str, str] = {**HONOURED, **INERT, **REFUSED}

# TransformerLens ``from_pretrained`` keyword arguments found in model_from_pretrained_kwargs.
# SAELens loads models with ``from_pretrained_no_processing(**kwargs)`` (since 3.19.2), so only
# the processing these switch on happened.
TL_KWARGS_HONOURED = {
    "center_writing_weights": "LayerNorm models: every residual-stream value has its per-token mean removed",
    "fold_value_biases": "moves the value bias out of hook_z: refused for hook_z SAEs",
    "refactor_factored_attn_matrices": "changes hook_z: refused for hook_z SAEs",
    "fold_ln": "changes only lnX.hook_normalized, which is read only for RMSNorm transcoders",
}
TL_KWARGS_INERT = ("center_unembed", "device", "n_devices", "dtype", "torch_dtype", "move_to_device",
                   "default_prepend_bos", "default_padding_side", "trust_remote_code", "checkpoint_index",
                   "checkpoint_value", "first_n_layers", "use_attn_result", "use_split_qkv_input",
                   "use_hook_mlp_in", "use_attn_in", "n_ctx")
