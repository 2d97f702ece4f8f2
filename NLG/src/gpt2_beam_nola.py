"""Beam-search decoding of GPT-2 fine-tuned with NOLA (adapters mixed from fixed random bases).

Same command line as gpt2_beam.py; this entry point only presets
--method nola (--nola_rank, --nola_c, --nola_num_basis, --qnola --qbits), matching gpt2_ft_nola.py.
"""
if not __package__:  # run as a file (python src/gpt2_beam_nola.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import sys

from nlg.gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "nola"},
         description="Beam-search decoding of GPT-2 fine-tuned with NOLA (adapters mixed from fixed random bases).")
