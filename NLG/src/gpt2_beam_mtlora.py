"""Beam-search decoding of GPT-2 fine-tuned with MTLoRA (Delta W = s B T A).

Same command line as gpt2_beam.py; this entry point only presets
--method mtlora --mtlora_structure ICFM (or SHIM, CTCM, DTSM), matching gpt2_ft_mtlora.py.
"""
import sys

from gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "mtlora", "mtlora_structure": "ICFM"},
         description="Beam-search decoding of GPT-2 fine-tuned with MTLoRA (Delta W = s B T A).")
