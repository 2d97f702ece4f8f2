"""Beam-search decoding of GPT-2 fine-tuned with LoRMA_+ (multiplicative, T = I + s B A).

Same command line as gpt2_beam.py; this entry point only presets
--method lorma --lorma_type rri (--lorma_mode pre|post, default pre), matching gpt2_ft_lorma_plus.py.
"""
if not __package__:  # run as a file (python src/gpt2_beam_lorma_plus.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import sys

from nlg.gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lorma", "lorma_type": "rri"},
         description="Beam-search decoding of GPT-2 fine-tuned with LoRMA_+ (multiplicative, T = I + s B A).")
