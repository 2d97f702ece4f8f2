"""Loading a Hugging Face causal LM and its tokenizer from an `hf:` spec (nlg/backbone.py), with
errors that name the flag and say what to do."""
import torch

from nlg.backbone import HFSpec


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise ImportError("a Hugging Face backbone needs the `transformers` package "
                          "(pip install transformers)") from None
    return transformers


def _check_gguf(spec: HFSpec, flag: str):
    if spec.gguf_file is None:
        return
    from transformers.utils import is_gguf_available
    if not is_gguf_available():
        raise ImportError(f"{flag} {spec}: reading a GGUF file needs the `gguf` package "
                          f"(pip install gguf)")


def _loading_error(spec: HFSpec, flag: str, what: str, e: Exception):
    where = "the folder" if spec.local else "the hub (or its local cache; offline: download it " \
                                            "first, or give its folder)"
    return ValueError(f"{flag} {spec}: cannot load the {what} from {where}: "
                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def load_config(spec: HFSpec, flag: str = "--backbone"):
    transformers = transformers_module()
    _check_gguf(spec, flag)
    try:
        config = transformers.AutoConfig.from_pretrained(spec.source, **spec.load_kwargs())
    except (OSError, ValueError, KeyError) as e:
        raise _loading_error(spec, flag, "model configuration", e) from None
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def load_model(spec: HFSpec, flag: str = "--backbone"):
    """The causal LM in float32 (an HF backbone trains in fp32; --bf16 autocasts, and decoding
    casts the merged model once)."""
    transformers = transformers_module()
    _check_gguf(spec, flag)
    # transformers 5 loads the checkpoint's dtype unless told and names the argument `dtype`;
    # 4.x named it torch_dtype.
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            spec.source, **{key: torch.float32}, **spec.load_kwargs())
    except (OSError, ValueError, KeyError) as e:
        raise _loading_error(spec, flag, "model", e) from None
    if spec.gguf_file is not None:
        # transformers dequantizes a GGUF file's weights into plain float tensors but leaves a
        # "quantized" marker on the model, which would refuse save_pretrained (--export_published).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def load_tokenizer(spec: HFSpec, flag: str = "--tokenizer"):
    transformers = transformers_module()
    _check_gguf(spec, flag)
    try:
        return transformers.AutoTokenizer.from_pretrained(spec.source, **spec.load_kwargs())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _loading_error(spec, flag, "tokenizer", e) from None
