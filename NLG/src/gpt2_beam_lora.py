"""Beam-search decoding of GPT-2 fine-tuned with LoRA.

Same command line as gpt2_beam.py; this entry point only presets
--method lora (--lora_dim, --lora_alpha), matching gpt2_ft_lora.py.
"""
import sys

from gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lora"},
         description="Beam-search decoding of GPT-2 fine-tuned with LoRA.")
