"""The model side of qlora.py, as QLoRA's qlora.py (NOLA's llama/qlora.py) builds it
(`get_accelerate_model`, lines 303-422, and PEFT 0.4's prepare_model_for_kbit_training):

- `load_base`: the causal LM, quantized by bitsandbytes at load (--bits 4: NF4 / FP4, double
  quantization of the block constants; --bits 8: LLM.int8() with threshold 6.0), the compute
  dtype bf16 under --bf16 (fp16 under --fp16, else fp32), the other weights bf16 under --bf16
  (fp32 otherwise, fp16 included); on GPUs device_map "auto" with --max_memory_MB each (one
  process), or the process's own GPU under torchrun; on a CPU the CPU.
- `load_tokenizer`: right padding, a [PAD] token with mean-initialised embeddings when there is
  none, LLaMA's bos / eos / unk set from the model config.
- `prepare_for_kbit_training`: every weight frozen, every fp16 / bf16 weight cast to fp32; on a
  k-bit base with --gradient_checkpointing, checkpointing on with input grads (PEFT 0.4).
- `linear_names`: find_all_linear_names: the last name of every Linear4bit (--bits 4) /
  Linear8bitLt (--bits 8) / nn.Linear (else) module, lm_head left out.
- `cast_like_qlora`: the casts after the adapters are in (qlora.py 413-422): under --bf16 each
  adapted layer to bf16 (its frozen weight, and its adapter tensors: qlora.py trains bf16
  adapters; --adapter_dtype float32 keeps fp32 ones), every module named *norm* to fp32,
  lm_head / embed_tokens to bf16 where fp32.
"""
import os
from typing import List

import loralib as lora


def float_dtypes(args):
    """(compute dtype, dtype of the other weights), qlora.py 325 and 341."""
    import torch
    compute = torch.float16 if args.fp16 else (torch.bfloat16 if args.bf16 else torch.float32)
    return compute, (torch.bfloat16 if args.bf16 and not args.fp16 else torch.float32)


def device_map(args):
    """(device_map, max_memory) as qlora.py 304-320; the CPU where there is no GPU."""
    import torch
    if not torch.cuda.is_available():
        return ({"": "cpu"} if args.bits in (4, 8) else None), None
    memory = {i: f"{args.max_memory_MB}MB" for i in range(torch.cuda.device_count())}
    if os.environ.get("LOCAL_RANK") is not None:
        rank = int(os.environ["LOCAL_RANK"])
        return {"": rank}, {"": memory[rank]}
    return "auto", memory


def load_base(args):
    import torch
    import transformers
    compute, dtype = float_dtypes(args)
    kw = {"cache_dir": args.cache_dir, "trust_remote_code": args.trust_remote_code}
    if args.use_auth_token:
        kw["token"] = True
    if args.bits in (4, 8):
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=args.bits == 4, load_in_8bit=args.bits == 8, llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=args.double_quant, bnb_4bit_quant_type=args.quant_type)
    kw["device_map"], kw["max_memory"] = device_map(args)
    # transformers 5 names the dtype argument `dtype`; 4.x `torch_dtype`
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model_name_or_path,
                                                              **{key: dtype}, **kw)
    setattr(model.config, key, dtype)
    if compute == torch.float16 and args.bits == 4 and torch.cuda.is_available() \
            and torch.cuda.is_bf16_supported():
        print("note: this GPU supports bfloat16; --bf16 trains faster than fp16 compute")
    return model


def load_tokenizer(args, model):
    import transformers
    import llm_trainer
    tok = transformers.AutoTokenizer.from_pretrained(
        args.model_name_or_path, cache_dir=args.cache_dir, padding_side="right",
        use_fast=args.use_fast_tokenizer, trust_remote_code=args.trust_remote_code)
    if tok.pad_token is None:
        llm_trainer.add_pad_token(tok, model)
    if "llama" in args.model_name_or_path.lower() or "Llama" in type(tok).__name__:
        # qlora.py 376-388: set LLaMA's special tokens from the model's ids so that they are
        # parsed as such (ids the config leaves unset are skipped)
        cfg = model.config
        unk = cfg.pad_token_id if cfg.pad_token_id not in (None, -1) else tok.pad_token_id
        special = {name: tok.convert_ids_to_tokens(i) for name, i in
                   (("eos_token", cfg.eos_token_id), ("bos_token", cfg.bos_token_id),
                    ("unk_token", unk)) if isinstance(i, int)}
        tok.add_special_tokens(special)
    return tok


def prepare_for_kbit_training(model, gradient_checkpointing: bool, checkpointing_kwargs):
    """PEFT 0.4's prepare_model_for_kbit_training (NOLA's llama/peft/utils/other.py 62-97)."""
    import torch
    import llm_trainer
    for p in model.parameters():
        p.requires_grad = False
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.to(torch.float32)
    kbit = getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit",
                                                                 False)
    if kbit and gradient_checkpointing:
        llm_trainer.enable_gradient_checkpointing(model, checkpointing_kwargs)


def linear_names(model, bits: int) -> List[str]:
    """qlora.py's find_all_linear_names (262-273)."""
    import torch
    found = set()
    for name, m in model.named_modules():
        kind = lora.kbit.kind(m)
        if (bits == 4 and kind == "4bit") or (bits == 8 and kind == "8bit") or \
                (bits not in (4, 8) and isinstance(m, torch.nn.Linear)):
            found.add(name.split(".")[-1])
    found.discard("lm_head")
    return sorted(found)


def cast_like_qlora(model, bf16: bool, adapter_dtype) -> None:
    """qlora.py 413-422 (`module.to(...)` on each LoraLayer, each *norm*, lm_head and
    embed_tokens). A LoraLayer there is the adapted linear itself, so under --bf16 its frozen
    weight goes to bf16 too (on a k-bit base the packed weight is no float and stays)."""
    import torch
    for name, module in model.named_modules():
        if isinstance(module, lora.AdaptedLinear) and module.has_adapter:
            for store in (module._parameters, module._buffers):
                for key, t in list(store.items()):
                    if t is None or not t.is_floating_point():
                        continue
                    if lora.is_adapter_key(key):
                        dtype = adapter_dtype
                    elif bf16:
                        dtype = torch.bfloat16
                    else:
                        continue
                    if isinstance(t, torch.nn.Parameter):
                        t.data = t.data.to(dtype)
                    else:
                        store[key] = t.to(dtype)
        if "norm" in name:
            module.to(torch.float32)
        if ("lm_head" in name or "embed_tokens" in name) and hasattr(module, "weight") \
                and bf16 and module.weight.dtype == torch.float32:
            module.to(torch.bfloat16)
