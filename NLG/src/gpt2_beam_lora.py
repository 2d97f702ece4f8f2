"""Beam-search decoding of GPT-2 fine-tuned with LoRA.

Same command line as gpt2_beam.py; this entry point only presets
--method lora (--lora_dim, --lora_alpha), matching gpt2_ft_lora.py.
"""
if not __package__:  # run as a file (python src/gpt2_beam_lora.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import sys

from nlg.gpt2_beam import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lora"},
         description="Beam-search decoding of GPT-2 fine-tuned with LoRA.")
