"""NOLA's llama/qlora/qlora.py is a copy of llama/qlora.py, so that the scripts in
llama/qlora/scripts/ run `python qlora.py` from llama/qlora/ (with data/mmlu beside them).
Here it runs ../qlora.py itself, from this folder."""
import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "qlora.py"), run_name="__main__")
