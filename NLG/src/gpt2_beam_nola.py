"""Beam-search decoding of GPT-2 fine-tuned with NOLA (adapters mixed from fixed random bases).

Same command line as gpt2_beam.py; this entry point only presets
--method nola (--nola_rank, --nola_c, --nola_num_basis, --qnola --qbits), matching gpt2_ft_nola.py.
"""
import sys

from gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "nola"},
         description="Beam-search decoding of GPT-2 fine-tuned with NOLA (adapters mixed from fixed random bases).")
