"""Fine-tune GPT-2 with LoRMA_+ (multiplicative, T = I + s B A).

Same command line as gpt2_ft.py (Microsoft's flags plus loralib's); this entry point only presets
--method lorma --lorma_type rri (--lorma_mode pre|post, default pre).
"""
if not __package__:  # run as a file (python src/gpt2_ft_lorma_plus.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import sys

from nlg.gpt2_ft import main

if __name__ == "__main__":
    main(sys.argv[1:], defaults={"method": "lorma", "lorma_type": "rri"},
         description="Fine-tune GPT-2 with LoRMA_+ (multiplicative, T = I + s B A).")
