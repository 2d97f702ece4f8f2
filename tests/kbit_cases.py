"""Tiny random LLaMA models quantized by bitsandbytes on the CPU (as transformers loads QLoRA's
bases), and their dequantized twins: the same model with every k-bit linear replaced by an
nn.Linear holding its dequantized weight, the reference the k-bit tests compare against."""
import copy
import warnings

import torch
import torch.nn as nn

# name -> (bits, quant_type, double quantization)
KINDS = {"nf4": (4, "nf4", False), "nf4-dq": (4, "nf4", True), "fp4": (4, "fp4", False),
         "fp4-dq": (4, "fp4", True), "int8": (8, None, False)}


def tiny_llama(folder, hidden=64, layers=2, vocab=128, tokenizer=None, seed=0):
    """A random LlamaForCausalLM saved with save_pretrained in `folder` (fp32)."""
    import transformers
    cfg = transformers.LlamaConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        vocab_size=len(tokenizer) if tokenizer is not None else vocab,
        **({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
           if tokenizer is not None else {"bos_token_id": 0, "eos_token_id": 1}))
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def bnb_config(kind, compute_dtype=torch.float32):
    import transformers
    bits, quant_type, double = KINDS[kind]
    if bits == 8:
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                           bnb_4bit_use_double_quant=double,
                                           bnb_4bit_compute_dtype=compute_dtype)


def load_quantized(folder, kind, dtype=torch.float32):
    """The model in `folder` quantized on the CPU as `kind` (compute dtype `dtype`)."""
    import transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=bnb_config(kind, dtype), device_map={"": "cpu"},
            dtype=dtype)


def dequantized_twin(model):
    """A copy of `model` whose bitsandbytes linears are nn.Linear layers holding the
    dequantized weights (bitsandbytes' own dequantization, not loralib's)."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf
    twin = copy.deepcopy(model)
    for name, m in list(twin.named_modules()):
        if isinstance(m, bnb.nn.Linear4bit):
            w = bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state)
        elif isinstance(m, bnb.nn.Linear8bitLt):
            scb = m.weight.SCB if m.weight.SCB is not None else m.state.SCB
            w = m.weight.data.float() * scb.float().view(-1, 1) / 127
        else:
            continue
        plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        plain.weight = nn.Parameter(w.float(), requires_grad=False)
        if m.bias is not None:
            plain.bias = nn.Parameter(m.bias.detach().float(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, child, plain)
    return twin
