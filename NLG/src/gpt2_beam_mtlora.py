"""Beam-search decoding of GPT-2 fine-tuned with MTLoRA (Delta W = s B T A).

Same command line as gpt2_beam.py; this entry point only presets
--method mtlora --mtlora_structure ICFM (or SHIM, CTCM, DTSM), matching gpt2_ft_mtlora.py.
"""
if not __package__:  # run as a file (python src/gpt2_beam_mtlora.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import sys

from nlg.gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "mtlora", "mtlora_structure": "ICFM"},
         description="Beam-search decoding of GPT-2 fine-tuned with MTLoRA (Delta W = s B T A).")
