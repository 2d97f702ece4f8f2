"""Fine-tune GPT-2 with NOLA (adapters mixed from fixed random bases).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method nola (--nola_rank, --nola_c, --nola_num_basis, --qnola --qbits).
"""
import sys

from gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "nola"},
         description="Fine-tune GPT-2 with NOLA (adapters mixed from fixed random bases).")
